/*-------------------------------------------------------------------------
 *
 * bktree_spgist.c
 *	  BK-tree over 64-bit hashes for SP-GiST: the operator class bktree_ops.
 *
 * A BK-tree (Burkhard and Keller, 1973) is a metric tree.  Every inner tuple
 * holds a vantage point c as its prefix; its nodes are labelled with a
 * Hamming distance L, and the subtree under label L holds exactly the hashes
 * v with d(v, c) = L.  For a query "within r of q", the triangle inequality
 * gives |d(q,c) - d(v,c)| <= d(q,v), so a subtree with label L can hold a
 * match only if |d(q,c) - L| <= r, and every hash in it is at least
 * |d(q,c) - L| from q: that lower bound drives ORDER BY hash <-> q.
 *
 * Distances are 0..64, so an inner tuple has at most 65 nodes; with an int2
 * label each node costs 16 bytes, about 1 kB for a full tuple, well inside
 * a page, so no bucketing of distances is needed.
 *
 * Balance comes from picksplit's choice of vantage point: it tries a sample
 * of the tuples and keeps the one whose distances spread the tuples most
 * evenly over labels.  Identical hashes all lie at distance 0 from any of
 * them; the core then marks the inner tuple allTheSame and spreads the
 * tuples over copies of one node, and choose handles that case explicitly.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree_spgist.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/spgist.h"
#include "access/stratnum.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/memutils.h"

#include "bktree.h"

/* Number of tuples picksplit tries as vantage point */
#define PICKSPLIT_CANDIDATES	16

/* Scan keys decoded on the stack up to this many; more are palloc'd */
#define LOCAL_KEYS	8

/*
 * Built with -DBKTREE_SPGIST_STATS, the backend counts what its scans visit,
 * and bktree_spg_stats() returns and resets the counts (ops/bench/restored.py
 * declares it when the library has it).  Off by default: no cost.
 */
#ifdef BKTREE_SPGIST_STATS
enum
{
	STAT_INNER,					/* inner tuples visited */
	STAT_INNER_ALLTHESAME,		/* of them, allTheSame */
	STAT_NODES,					/* nodes followed */
	STAT_LEAF,					/* leaf tuples visited */
	STAT_LEAF_MATCH,			/* of them, matches */
	STAT_COUNT
};
static int64 scanStats[STAT_COUNT];

#define COUNT_STAT(which, n)	(scanStats[(which)] += (n))

PG_FUNCTION_INFO_V1(bktree_spg_stats);
Datum
bktree_spg_stats(PG_FUNCTION_ARGS)
{
	Datum		values[STAT_COUNT];
	int			i;

	for (i = 0; i < STAT_COUNT; i++)
	{
		values[i] = Int64GetDatum(scanStats[i]);
		scanStats[i] = 0;
	}
	PG_RETURN_ARRAYTYPE_P(construct_array(values, STAT_COUNT, INT8OID,
										  sizeof(int64), FLOAT8PASSBYVAL,
										  TYPALIGN_DOUBLE));
}
#else
#define COUNT_STAT(which, n)	((void) 0)
#endif

/*
 * Decode the scan keys into queries[] (nkeys entries).  <@ keys go through
 * the per-scan cache in flinfo, so the composite is decoded once per scan.
 */
static void
decodeScanKeys(FmgrInfo *flinfo, ScanKey keys, int nkeys, BkQuery *queries)
{
	int			i;

	for (i = 0; i < nkeys; i++)
		bktreeDecodeKey(flinfo, keys[i].sk_strategy, keys[i].sk_subtype,
						keys[i].sk_argument, &queries[i]);
}

/*
 * Is the ORDER BY argument NULL?  The planner normally folds "hash <-> NULL"
 * away; if one reaches us, every hash is ordered at distance 0.
 */
static inline bool
orderByIsNull(ScanKey orderby)
{
	return (orderby->sk_flags & SK_ISNULL) != 0;
}

PG_FUNCTION_INFO_V1(bktree_spg_config);
Datum
bktree_spg_config(PG_FUNCTION_ARGS)
{
	/* spgConfigIn *cfgin = (spgConfigIn *) PG_GETARG_POINTER(0); */
	spgConfigOut *cfg = (spgConfigOut *) PG_GETARG_POINTER(1);

	cfg->prefixType = INT8OID;	/* the vantage point */
	cfg->labelType = INT2OID;	/* distance from the vantage point */
#if PG_VERSION_NUM >= 140000
	cfg->leafType = INT8OID;
#endif
	cfg->canReturnData = true;
	cfg->longValuesOK = false;
	PG_RETURN_VOID();
}

/*
 * Find the node labelled distance in a sorted label array.  On success,
 * returns true and *i gets the node's index; on failure, *i gets the index
 * where a node with that label must be inserted to keep the labels sorted.
 */
static bool
findLabel(const Datum *labels, int nNodes, int distance, int *i)
{
	int			lo = 0;
	int			hi = nNodes;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;
		int			label = DatumGetInt16(labels[mid]);

		if (label == distance)
		{
			*i = mid;
			return true;
		}
		if (label < distance)
			lo = mid + 1;
		else
			hi = mid;
	}
	*i = lo;
	return false;
}

PG_FUNCTION_INFO_V1(bktree_spg_choose);
Datum
bktree_spg_choose(PG_FUNCTION_ARGS)
{
	spgChooseIn *in = (spgChooseIn *) PG_GETARG_POINTER(0);
	spgChooseOut *out = (spgChooseOut *) PG_GETARG_POINTER(1);
	int64		value = DatumGetInt64(in->datum);
	int			distance;
	int			nodeN;

	Assert(in->hasPrefix);
	distance = bktreeDistance(value, DatumGetInt64(in->prefixDatum));

	if (in->allTheSame)
	{
		int			label = DatumGetInt16(in->nodeLabels[0]);

		/*
		 * All nodes carry the same label (typically many identical hashes at
		 * distance 0).  A value at that distance may go into any node; the
		 * core picks one at random, which keeps the copies balanced.
		 */
		if (distance == label)
		{
			out->resultType = spgMatchNode;
			out->result.matchNode.nodeN = 0;	/* core chooses */
			out->result.matchNode.levelAdd = 1;
			out->result.matchNode.restDatum = in->datum;
			PG_RETURN_VOID();
		}

		/*
		 * Any other distance: nodes cannot be added to an allTheSame tuple,
		 * so split it.  The new upper tuple keeps the vantage point and one
		 * node with the shared label, pointing to the old tuple; the core
		 * then calls us again on the upper tuple, which adds our node.
		 */
		out->resultType = spgSplitTuple;
		out->result.splitTuple.prefixHasPrefix = true;
		out->result.splitTuple.prefixPrefixDatum = in->prefixDatum;
		out->result.splitTuple.prefixNNodes = 1;
		out->result.splitTuple.prefixNodeLabels = (Datum *) palloc(sizeof(Datum));
		out->result.splitTuple.prefixNodeLabels[0] = Int16GetDatum(label);
		out->result.splitTuple.childNodeN = 0;
		out->result.splitTuple.postfixHasPrefix = true;
		out->result.splitTuple.postfixPrefixDatum = in->prefixDatum;
		PG_RETURN_VOID();
	}

	if (findLabel(in->nodeLabels, in->nNodes, distance, &nodeN))
	{
		out->resultType = spgMatchNode;
		out->result.matchNode.nodeN = nodeN;
		out->result.matchNode.levelAdd = 1;
		out->result.matchNode.restDatum = in->datum;
	}
	else
	{
		Assert(in->nNodes < BKTREE_MAX_DISTANCE + 1);
		out->resultType = spgAddNode;
		out->result.addNode.nodeLabel = Int16GetDatum(distance);
		out->result.addNode.nodeN = nodeN;
	}
	PG_RETURN_VOID();
}

/*
 * Score a vantage point for the given tuples: the sum over labels of the
 * squared number of tuples at that distance, i.e. (up to a factor) the
 * chance that two tuples land in the same node.  Lower is better: the
 * tuples spread over more, smaller subtrees.  counts[] gets the histogram.
 */
static double
vantageScore(int64 vantage, const Datum *datums, int nTuples, int *counts)
{
	double		score = 0.0;
	int			i;

	memset(counts, 0, sizeof(int) * (BKTREE_MAX_DISTANCE + 1));
	for (i = 0; i < nTuples; i++)
		counts[bktreeDistance(vantage, DatumGetInt64(datums[i]))]++;
	for (i = 0; i <= BKTREE_MAX_DISTANCE; i++)
		score += (double) counts[i] * counts[i];
	return score;
}

PG_FUNCTION_INFO_V1(bktree_spg_picksplit);
Datum
bktree_spg_picksplit(PG_FUNCTION_ARGS)
{
	spgPickSplitIn *in = (spgPickSplitIn *) PG_GETARG_POINTER(0);
	spgPickSplitOut *out = (spgPickSplitOut *) PG_GETARG_POINTER(1);
	int			counts[BKTREE_MAX_DISTANCE + 1];
	int			nodeOf[BKTREE_MAX_DISTANCE + 1];
	int64		best = DatumGetInt64(in->datums[0]);
	double		bestScore = -1.0;
	int			ncandidates = Min(PICKSPLIT_CANDIDATES, in->nTuples);
	int			i;

	/*
	 * Try tuples spread evenly through the input as vantage points; the
	 * input order follows the leaf chain, so this samples across it.  An
	 * exact duplicate of an earlier candidate scores the same and is skipped
	 * by the strict comparison.
	 */
	for (i = 0; i < ncandidates; i++)
	{
		int64		candidate;
		double		score;

		candidate = DatumGetInt64(in->datums[(int) ((int64) i * in->nTuples / ncandidates)]);
		score = vantageScore(candidate, in->datums, in->nTuples, counts);
		if (bestScore < 0 || score < bestScore)
		{
			bestScore = score;
			best = candidate;
		}
	}
	vantageScore(best, in->datums, in->nTuples, counts);

	/* One node per distance that occurs, labels in ascending order */
	out->hasPrefix = true;
	out->prefixDatum = Int64GetDatum(best);
	out->nNodes = 0;
	out->nodeLabels = (Datum *) palloc(sizeof(Datum) * (BKTREE_MAX_DISTANCE + 1));
	for (i = 0; i <= BKTREE_MAX_DISTANCE; i++)
	{
		nodeOf[i] = -1;
		if (counts[i] > 0)
		{
			nodeOf[i] = out->nNodes;
			out->nodeLabels[out->nNodes++] = Int16GetDatum(i);
		}
	}

	/*
	 * If every tuple is at one distance (all identical), we return a single
	 * node and the core turns the tuple into an allTheSame one.
	 */
	out->mapTuplesToNodes = (int *) palloc(sizeof(int) * in->nTuples);
	out->leafTupleDatums = (Datum *) palloc(sizeof(Datum) * in->nTuples);
	for (i = 0; i < in->nTuples; i++)
	{
		int			d = bktreeDistance(best, DatumGetInt64(in->datums[i]));

		Assert(nodeOf[d] >= 0);
		out->mapTuplesToNodes[i] = nodeOf[d];
		out->leafTupleDatums[i] = in->datums[i];
	}
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bktree_spg_inner_consistent);
Datum
bktree_spg_inner_consistent(PG_FUNCTION_ARGS)
{
	spgInnerConsistentIn *in = (spgInnerConsistentIn *) PG_GETARG_POINTER(0);
	spgInnerConsistentOut *out = (spgInnerConsistentOut *) PG_GETARG_POINTER(1);
	BkQuery		localQueries[LOCAL_KEYS];
	int			localDist[LOCAL_KEYS];
	int			localOrder[LOCAL_KEYS];
	BkQuery    *queries = localQueries;
	int		   *queryDist = localDist;	/* d(q, vantage) per scan key */
	int		   *orderDist = localOrder; /* d(q, vantage) per ORDER BY */
	double	   *parentBounds = (double *) in->traversalValue;
	int64		vantage;
	int			i;
	int			k;

	if (in->nkeys > LOCAL_KEYS)
	{
		queries = palloc(sizeof(BkQuery) * in->nkeys);
		queryDist = palloc(sizeof(int) * in->nkeys);
	}
	if (in->norderbys > LOCAL_KEYS)
		orderDist = palloc(sizeof(int) * in->norderbys);

	out->nNodes = 0;
	out->nodeNumbers = (int *) palloc(sizeof(int) * in->nNodes);
	if (in->norderbys > 0)
	{
		out->distances = (double **) palloc(sizeof(double *) * in->nNodes);
		out->traversalValues = (void **) palloc(sizeof(void *) * in->nNodes);
	}

	Assert(in->hasPrefix);
	vantage = DatumGetInt64(in->prefixDatum);
	COUNT_STAT(STAT_INNER, 1);
	COUNT_STAT(STAT_INNER_ALLTHESAME, in->allTheSame ? 1 : 0);

	decodeScanKeys(fcinfo->flinfo, in->scankeys, in->nkeys, queries);
	for (k = 0; k < in->nkeys; k++)
		queryDist[k] = bktreeDistance(queries[k].center, vantage);
	for (k = 0; k < in->norderbys; k++)
		orderDist[k] = orderByIsNull(&in->orderbys[k]) ? 0 :
			bktreeDistance(DatumGetInt64(in->orderbys[k].sk_argument), vantage);

	/*
	 * For allTheSame tuples every label is the same, so this loop returns
	 * either all nodes or none, as the core requires.
	 */
	for (i = 0; i < in->nNodes; i++)
	{
		int			label = DatumGetInt16(in->nodeLabels[i]);
		bool		match = true;

		for (k = 0; k < in->nkeys; k++)
		{
			/* triangle inequality: all of the subtree is >= |d(q,c) - L| away */
			if (abs(queryDist[k] - label) > queries[k].radius)
			{
				match = false;
				break;			/* no need to consider remaining conditions */
			}
		}
		if (!match)
			continue;

		if (in->norderbys > 0)
		{
			double	   *bounds;

			/*
			 * Each ancestor's ring bounds the subtree too, so keep the
			 * largest lower bound seen on the way down.
			 */
			bounds = MemoryContextAlloc(in->traversalMemoryContext,
										sizeof(double) * in->norderbys);
			for (k = 0; k < in->norderbys; k++)
			{
				double		bound = orderByIsNull(&in->orderbys[k]) ? 0.0 :
					(double) abs(orderDist[k] - label);

				if (parentBounds != NULL && parentBounds[k] > bound)
					bound = parentBounds[k];
				bounds[k] = bound;
			}
			out->distances[out->nNodes] = palloc(sizeof(double) * in->norderbys);
			memcpy(out->distances[out->nNodes], bounds, sizeof(double) * in->norderbys);
			out->traversalValues[out->nNodes] = bounds;
		}
		out->nodeNumbers[out->nNodes++] = i;
	}
	COUNT_STAT(STAT_NODES, out->nNodes);

	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(bktree_spg_leaf_consistent);
Datum
bktree_spg_leaf_consistent(PG_FUNCTION_ARGS)
{
	spgLeafConsistentIn *in = (spgLeafConsistentIn *) PG_GETARG_POINTER(0);
	spgLeafConsistentOut *out = (spgLeafConsistentOut *) PG_GETARG_POINTER(1);
	int64		value = DatumGetInt64(in->leafDatum);
	BkQuery		localQueries[LOCAL_KEYS];
	BkQuery    *queries = localQueries;
	int			k;

	COUNT_STAT(STAT_LEAF, 1);

	/* all tests are exact */
	out->recheck = false;
	out->recheckDistances = false;
	out->leafValue = in->leafDatum;

	if (in->nkeys > LOCAL_KEYS)
		queries = palloc(sizeof(BkQuery) * in->nkeys);
	decodeScanKeys(fcinfo->flinfo, in->scankeys, in->nkeys, queries);
	for (k = 0; k < in->nkeys; k++)
	{
		if (bktreeDistance(value, queries[k].center) > queries[k].radius)
			PG_RETURN_BOOL(false);	/* no need to consider remaining conditions */
	}
	COUNT_STAT(STAT_LEAF_MATCH, 1);

	if (in->norderbys > 0)
	{
		out->distances = (double *) palloc(sizeof(double) * in->norderbys);
		for (k = 0; k < in->norderbys; k++)
			out->distances[k] = orderByIsNull(&in->orderbys[k]) ? 0.0 :
				(double) bktreeDistance(value, DatumGetInt64(in->orderbys[k].sk_argument));
	}
	PG_RETURN_BOOL(true);
}
