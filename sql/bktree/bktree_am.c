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
#include "catalog/pg_type.h"
#include "nodes/pathnodes.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "utils/fmgrprotos.h"
#include "utils/index_selfuncs.h"
#include "utils/lsyscache.h"

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

static void
bktreeCostEstimate(PlannerInfo *root, IndexPath *path, double loop_count,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	IndexOptInfo *index = path->indexinfo;
	double		ntuples = Max(index->tuples, 1.0);
	double		depth;
	double		share;
	int			radius;

	spgcostestimate(root, path, loop_count, indexStartupCost, indexTotalCost,
					indexSelectivity, indexCorrelation, indexPages);
	radius = planTimeRadius(root, path);
	if (radius < 0)
		return;

	depth = Max(1.0, log(ntuples / BKTREE_LEAF_TUPLES) / log(BKTREE_FANOUT));
	share = pow(erf((radius + 0.5) / (BKTREE_LABEL_SD * M_SQRT2)), depth);
	*indexTotalCost += share * ntuples * BKTREE_TUPLE_COST +
		share * index->pages * random_page_cost;
}

static void
mihCostEstimate(PlannerInfo *root, IndexPath *path, double loop_count,
				Cost *indexStartupCost, Cost *indexTotalCost,
				Selectivity *indexSelectivity, double *indexCorrelation,
				double *indexPages)
{
	IndexOptInfo *index = path->indexinfo;
	double		ntuples = Max(index->rel->tuples, 1.0);
	int			depth[MIH_SUBSTRINGS];
	double		nbuckets;
	double		keys;
	int			radius;

	gincostestimate(root, path, loop_count, indexStartupCost, indexTotalCost,
					indexSelectivity, indexCorrelation, indexPages);
	radius = planTimeRadius(root, path);
	if (radius < 0)
		return;
	nbuckets = bktreeMihxDepths(radius, depth);
	if (nbuckets < 0)
		return;					/* a full index scan: GIN's estimate holds */

	keys = nbuckets * ntuples / MIH_VALUES;
	*indexStartupCost = nbuckets * seq_page_cost + keys * cpu_operator_cost +
		*indexSelectivity * ntuples * cpu_index_tuple_cost;
	*indexTotalCost = *indexStartupCost;
}

PG_FUNCTION_INFO_V1(bktree_handler);
Datum
bktree_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine;

	amroutine = (IndexAmRoutine *) DatumGetPointer(DirectFunctionCall1(spghandler,
																		PointerGetDatum(NULL)));
	amroutine->amcostestimate = bktreeCostEstimate;
	PG_RETURN_POINTER(amroutine);
}

PG_FUNCTION_INFO_V1(bktree_mih_handler);
Datum
bktree_mih_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine;

	amroutine = (IndexAmRoutine *) DatumGetPointer(DirectFunctionCall1(ginhandler,
																		PointerGetDatum(NULL)));
	amroutine->amcostestimate = mihCostEstimate;
	PG_RETURN_POINTER(amroutine);
}
