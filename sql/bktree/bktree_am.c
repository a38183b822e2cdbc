/*-------------------------------------------------------------------------
 *
 * bktree_am.c
 *	  The access methods "bktree" and "bktree_mih": SP-GiST and GIN with a
 *	  cost estimate that knows what a Hamming radius search costs.
 *
 * An index's cost estimate belongs to its access method, not to its
 * operator class, and the generic ones are wrong for these indexes in
 * opposite directions: SP-GiST charges a BK-tree search for the rows it
 * returns, while it opens a share of the tree that grows quickly with the
 * radius; GIN charges every enumerated key a full entry-tree descent, so
 * the planner never took the multi-index-hashing index when a BK-tree was
 * on the same column.  Each handler here returns its core access method's
 * IndexAmRoutine (spghandler, ginhandler) with amcostestimate replaced; the
 * on-disk format, the scans and the WAL are the core's own.
 *
 * Both estimates first run the core one (which also sets the selectivity,
 * the correlation and the page count) and then replace the cost of a
 * radius search whose center and radius are known at plan time:
 *
 * BK-tree: at each inner tuple the child with label L is opened when
 * |d(q,c) - L| <= r.  For random hashes d(q,c) and L are both about
 * Binomial(64, 1/2) (sd 4), so their difference has sd sqrt(32) and a
 * child is opened with probability p = P(|X| <= r + 1/2); over a tree of
 * depth h = log(N / 300) / log(12) (300 leaf tuples a page, about 12
 * children worth following) the share visited is p^h.  Each visited leaf
 * tuple costs 20 cpu_index_tuple_cost (a distance and a queue entry: a
 * whole-tree walk measures ~10x a sequential scan's row), each visited page
 * a random page read.  Against
 * ops/bench/index.py at 10M random hashes this gives 4% at r = 3 (measured
 * ~1.5%), 27% at r = 6 (23%) and 77% at r = 10 (86%).
 *
 * MIH (the full-hash keys of bktree_mih.c): a search descends to B
 * buckets (bktreeMihxDepths) and compares the ~N / 65536 keys of each, so
 * cost = B * seq_page_cost (the upper entry tree stays cached) + B * N /
 * 65536 * cpu_operator_cost, plus cpu_index_tuple_cost per match.  At 10M
 * hashes that is ~5 units at r = 3, ~4k at r = 15 and a sequential scan
 * ~180k; measured at 1M, r = 15 (2788 buckets) takes 20-40 ms and a
 * sequential scan 80 ms.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree_am.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/amapi.h"
#include "access/gin_private.h"
#include "access/reloptions.h"
#include "catalog/pg_type.h"
#include "nodes/pathnodes.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "utils/fmgrprotos.h"
#include "utils/index_selfuncs.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "nodes/execnodes.h"

#include "bktree.h"

/* Model constants, see the file header */
#define BKTREE_LEAF_TUPLES		300.0
#define BKTREE_FANOUT			12.0
#define BKTREE_LABEL_SD			5.656854249	/* sqrt(32) */
#define MIH_VALUES				65536.0

/*
 * A visited BK-tree leaf tuple: a distance, a best-first queue entry for
 * ORDER BY; a whole-tree walk measures ~10x a sequential scan's row.
 */
#define BKTREE_TUPLE_COST		(20 * cpu_index_tuple_cost)

/*
 * The radius of a <@ operand if known at plan time, else -2.  The center
 * does not change the cost, so "hash <@ (q.h, 4)" in a LATERAL join, where
 * q.h is a column of the outer side, is costed as radius 4.
 */
static int
operandRadius(Node *operand)
{
	BkQuery		query;

	if (bktreePlanTimeQuery(operand, &query))
		return query.radius;
	if (IsA(operand, RowExpr) && list_length(((RowExpr *) operand)->args) == 2)
	{
		Const	   *radius = (Const *) lsecond(((RowExpr *) operand)->args);

		if (IsA(radius, Const) && radius->consttype == INT8OID)
			return radius->constisnull ? -1 :
				bktreeClampRadius(DatumGetInt64(radius->constvalue));
	}
	return -2;
}

/*
 * The smallest radius of the index's <@ and = conditions known at plan
 * time, or -2 if there is none (-1 is an unsatisfiable condition).
 */
static int
planTimeRadius(PlannerInfo *root, IndexPath *path)
{
	int			radius = -2;
	ListCell   *lc;

	foreach(lc, path->indexclauses)
	{
		IndexClause *iclause = lfirst_node(IndexClause, lc);
		Oid			opfamily = path->indexinfo->opfamily[iclause->indexcol];
		ListCell   *lc2;

		foreach(lc2, iclause->indexquals)
		{
			RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc2);
			OpExpr	   *op = (OpExpr *) rinfo->clause;
			int			strategy;
			int			r;

			if (!IsA(op, OpExpr) || list_length(op->args) != 2)
				continue;
			strategy = get_op_opfamily_strategy(op->opno, opfamily);
			if (strategy == BKTREE_EQUAL_STRATEGY)
				r = 0;
			else if (strategy == BKTREE_CONTAINED_STRATEGY)
				r = operandRadius(estimate_expression_value(root, lsecond(op->args)));
			else
				continue;
			if (r != -2 && (radius == -2 || r < radius))
				radius = r;
		}
	}
	return radius;
}

/*
 * The added cost of a radius search on an index of the given kind, in
 * cost units (see the file header); -1 when the core estimate is to stand.
 */
typedef Cost (*RadiusCost) (IndexOptInfo *index, int radius, Selectivity selectivity);

static Cost
bktreeRadiusCost(IndexOptInfo *index, int radius, Selectivity selectivity)
{
	double		ntuples = Max(index->tuples, 1.0);
	double		depth = Max(1.0, log(ntuples / BKTREE_LEAF_TUPLES) / log(BKTREE_FANOUT));
	double		share = pow(erf((radius + 0.5) / (BKTREE_LABEL_SD * M_SQRT2)), depth);

	return share * ntuples * BKTREE_TUPLE_COST + share * index->pages * random_page_cost;
}

static Cost
mihRadiusCost(IndexOptInfo *index, int radius, Selectivity selectivity)
{
	double		ntuples = Max(index->rel->tuples, 1.0);
	int			depth[MIH_SUBSTRINGS];
	double		nbuckets = bktreeMihxDepths(radius, depth);

	if (nbuckets < 0)
		return -1;				/* a full index scan: GIN's estimate holds */
	return nbuckets * seq_page_cost + nbuckets * ntuples / MIH_VALUES * cpu_operator_cost +
		selectivity * ntuples * cpu_index_tuple_cost;
}

/*
 * Both access methods' amcostestimate: the core one (selectivity,
 * correlation, pages), then, for a radius known at plan time, the model's
 * cost.  The BK-tree's is added to the core's (which charges the rows
 * returned and the descent); the MIH one replaces GIN's, whose charge per
 * enumerated key is what misled the planner.
 */
static void
radiusCostEstimate(amcostestimate_function core, RadiusCost model, bool replace,
				   PlannerInfo *root, IndexPath *path, double loop_count,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	int			radius;
	Cost		cost;

	core(root, path, loop_count, indexStartupCost, indexTotalCost,
		 indexSelectivity, indexCorrelation, indexPages);
	radius = planTimeRadius(root, path);
	if (radius < 0)
		return;
	cost = model(path->indexinfo, radius, *indexSelectivity);
	if (cost < 0)
		return;
	if (replace)
		*indexStartupCost = *indexTotalCost = cost;
	else
		*indexTotalCost += cost;
}

static void
bktreeCostEstimate(PlannerInfo *root, IndexPath *path, double loop_count,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	radiusCostEstimate(spgcostestimate, bktreeRadiusCost, false, root, path, loop_count,
					   indexStartupCost, indexTotalCost, indexSelectivity,
					   indexCorrelation, indexPages);
}

static void
mihCostEstimate(PlannerInfo *root, IndexPath *path, double loop_count,
				Cost *indexStartupCost, Cost *indexTotalCost,
				Selectivity *indexSelectivity, double *indexCorrelation,
				double *indexPages)
{
	radiusCostEstimate(gincostestimate, mihRadiusCost, true, root, path, loop_count,
					   indexStartupCost, indexTotalCost, indexSelectivity,
					   indexCorrelation, indexPages);
}

/*
 * Fast update is off by default for bktree_mih: inserted rows go straight
 * into the entry tree, and no search reads a pending list.  GIN's scan
 * compares every pending row with every scan entry (collectMatchesForHeapRow:
 * a binary search over the row's keys and a comparePartial call per pair),
 * and this class's scan has one entry per bucket: 4 at radius 3 but 188 at
 * radius 8, wikihash search's default.  With the 256 kB pending list of
 * versions 1.1-1.2 (up to ~2,000-2,500 rows, which a crawl's writes keep
 * refilling) a radius-8 probe of 7.1M hashes took 18-60 ms with 2,000 rows
 * pending instead of 2.4-3.8 ms (docs/bktree-benchmarks.md, run 7).  An
 * insert then costs one entry-tree insert per key: 2x GIN's CPU per row
 * COPYed into a one-column table (run 5c), no measurable difference on the
 * 7.5M-row files table with its other indexes (run 7).
 *
 * An index that sets fastupdate or gin_pending_list_limit keeps GIN's
 * behaviour, with a 256 kB list when only fastupdate = on is given
 * (gin_pending_list_limit's 4 MB held 47k rows after a bulk load, and a
 * radius 3 search took 20-130x as long; run 5).
 *
 * GIN reads the options through rd_options, which the relcache leaves NULL
 * for an index created without options (GIN's defaults then apply), and
 * amoptions is not called for it.  So both paths are covered: mihOptions
 * sets the defaults for what is not given, and mihInsert gives an index
 * without options the same before GIN reads them.  That struct lives in
 * CacheMemoryContext; the relcache pfrees rd_options itself when it
 * rebuilds or drops the entry.  A pending list left by an older version is
 * merged by the next VACUUM (or autovacuum's ANALYZE) of the table.
 */
#define MIH_PENDING_LIST_KB		256

static bool
optionGiven(Datum reloptions, const char *name)
{
	ListCell   *lc;

	if (!PointerIsValid(DatumGetPointer(reloptions)))
		return false;
	foreach(lc, untransformRelOptions(reloptions))
	{
		if (strcmp(lfirst_node(DefElem, lc)->defname, name) == 0)
			return true;
	}
	return false;
}

static bytea *
mihOptions(Datum reloptions, bool validate)
{
	GinOptions *options = (GinOptions *) ginoptions(reloptions, validate);

	if (options != NULL)
	{
		bool		fastupdate = optionGiven(reloptions, "fastupdate");
		bool		limit = optionGiven(reloptions, "gin_pending_list_limit");

		if (!fastupdate && !limit)
			options->useFastUpdate = false;
		if (!limit)
			options->pendingListCleanupSize = MIH_PENDING_LIST_KB;
	}
	return (bytea *) options;
}

static bool
mihInsert(Relation index, Datum *values, bool *isnull, ItemPointer ht_ctid,
		  Relation heapRel, IndexUniqueCheck checkUnique, bool indexUnchanged,
		  IndexInfo *indexInfo)
{
	if (index->rd_options == NULL)
	{
		GinOptions *options = MemoryContextAllocZero(CacheMemoryContext,
													 sizeof(GinOptions));

		SET_VARSIZE(options, sizeof(GinOptions));
		options->useFastUpdate = false;
		options->pendingListCleanupSize = MIH_PENDING_LIST_KB;
		index->rd_options = (bytea *) options;
	}
	return gininsert(index, values, isnull, ht_ctid, heapRel, checkUnique,
					 indexUnchanged, indexInfo);
}

/* The core access method's IndexAmRoutine with this extension's estimate */
static IndexAmRoutine *
wrapHandler(PGFunction core, amcostestimate_function costestimate)
{
	IndexAmRoutine *amroutine;

	amroutine = (IndexAmRoutine *) DatumGetPointer(DirectFunctionCall1(core,
																		PointerGetDatum(NULL)));
	amroutine->amcostestimate = costestimate;
	return amroutine;
}

PG_FUNCTION_INFO_V1(bktree_handler);
Datum
bktree_handler(PG_FUNCTION_ARGS)
{
	PG_RETURN_POINTER(wrapHandler(spghandler, bktreeCostEstimate));
}

PG_FUNCTION_INFO_V1(bktree_mih_handler);
Datum
bktree_mih_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = wrapHandler(ginhandler, mihCostEstimate);

	amroutine->amoptions = mihOptions;
	amroutine->aminsert = mihInsert;
	PG_RETURN_POINTER(amroutine);
}
