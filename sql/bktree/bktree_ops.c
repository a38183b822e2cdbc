/*-------------------------------------------------------------------------
 *
 * bktree_ops.c
 *	  Operators, hamming_distance() and the selectivity estimate of the
 *	  bktree extension.
 *
 * A search is "hash <@ (center, distance)": the hash lies within the given
 * Hamming distance of center.  The right operand is the composite type
 * bktree_area, so a row literal such as (123, 3) resolves to it.  Because a
 * composite whose fields are NULL is not itself NULL, the STRICT marking of
 * the functions does not cover NULL fields; they are handled here and make
 * the condition match nothing, like a negative distance.
 *
 * Selectivity: for independent uniform bits the fraction of hashes within
 * distance r of a point is sum_{i<=r} C(64,i) / 2^64.  Real hashes cluster
 * (near-duplicates, flat images hashing to 0 or -1), so the estimate also
 * counts the column's most common values exactly and uses the histogram
 * bounds as a sample of the remaining rows; the binomial term is the floor.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree_ops.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_statistic.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/primnodes.h"
#include "utils/lsyscache.h"
#include "utils/selfuncs.h"

#include "bktree.h"

PG_MODULE_MAGIC;

/* Selectivity when the right operand is not known at plan time */
#define DEFAULT_BKTREE_SEL	0.0001

/* A composite datum longer than this is not cached (ours is 40 bytes) */
#define AREA_CACHE_BYTES	128
#define AREA_CACHE_SLOTS	4

typedef struct AreaCacheEntry
{
	Size		len;			/* 0 = empty slot */
	char		bytes[AREA_CACHE_BYTES];
	BkQuery		query;
} AreaCacheEntry;

typedef struct AreaCache
{
	int			next;			/* slot to overwrite next */
	AreaCacheEntry entries[AREA_CACHE_SLOTS];
} AreaCache;

/*
 * Clamp a requested radius to -1..BKTREE_MAX_DISTANCE (see BkQuery).
 */
int
bktreeClampRadius(int64 radius)
{
	if (radius < 0)
		return -1;
	if (radius > BKTREE_MAX_DISTANCE)
		return BKTREE_MAX_DISTANCE;
	return (int) radius;
}

/*
 * Decode a bktree_area datum into *query.  NULL fields give radius -1.
 */
void
bktreeDecodeArea(Datum area, BkQuery *query)
{
	HeapTupleHeader tuple = DatumGetHeapTupleHeader(area);
	bool		centerNull;
	bool		radiusNull;
	Datum		center;
	Datum		radius;

	center = GetAttributeByNum(tuple, 1, &centerNull);
	radius = GetAttributeByNum(tuple, 2, &radiusNull);
	if (centerNull || radiusNull)
	{
		query->center = 0;
		query->radius = -1;
		return;
	}
	query->center = DatumGetInt64(center);
	query->radius = bktreeClampRadius(DatumGetInt64(radius));
}

/*
 * As bktreeDecodeArea, but remembers recent results in flinfo->fn_extra,
 * keyed by the composite's bytes, so that a scan or a sequential filter
 * decodes its query once rather than once per row.  Comparing bytes rather
 * than pointers keeps the cache right across rescans with new arguments.
 */
void
bktreeDecodeAreaCached(FmgrInfo *flinfo, Datum area, BkQuery *query)
{
	HeapTupleHeader tuple = DatumGetHeapTupleHeader(area);
	Size		len = HeapTupleHeaderGetDatumLength(tuple);
	AreaCache  *cache;
	AreaCacheEntry *entry;
	int			i;

	if (flinfo == NULL || len > AREA_CACHE_BYTES)
	{
		bktreeDecodeArea(PointerGetDatum(tuple), query);
		return;
	}

	cache = (AreaCache *) flinfo->fn_extra;
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(AreaCache));
		flinfo->fn_extra = cache;
	}

	for (i = 0; i < AREA_CACHE_SLOTS; i++)
	{
		entry = &cache->entries[i];
		if (entry->len == len && memcmp(entry->bytes, tuple, len) == 0)
		{
			*query = entry->query;
			return;
		}
	}

	bktreeDecodeArea(PointerGetDatum(tuple), query);
	entry = &cache->entries[cache->next];
	cache->next = (cache->next + 1) % AREA_CACHE_SLOTS;
	entry->len = len;
	memcpy(entry->bytes, tuple, len);
	entry->query = *query;
}

/*
 * Decode the argument of a search key of any strategy into *query: the one
 * place the strategies of bktree_ops and bktree_mih_ops are told apart for
 * a search (SP-GiST's scan keys, the GIN classes' extract_query).  <@
 * arguments go through the cache in flinfo when there is one; '=' compares
 * int8 with an int8, int4 or int2 constant (subtype), widened here.
 */
void
bktreeDecodeKey(FmgrInfo *flinfo, StrategyNumber strategy, Oid subtype,
				Datum argument, BkQuery *query)
{
	switch (strategy)
	{
		case BKTREE_CONTAINED_STRATEGY:
			bktreeDecodeAreaCached(flinfo, argument, query);
			break;
		case BKTREE_EQUAL_STRATEGY:
			if (subtype == INT4OID)
				query->center = DatumGetInt32(argument);
			else if (subtype == INT2OID)
				query->center = DatumGetInt16(argument);
			else
				query->center = DatumGetInt64(argument);
			query->radius = 0;
			break;
		default:
			elog(ERROR, "unrecognized strategy number: %d", strategy);
			query->radius = -1; /* keep compiler quiet */
			break;
	}
}

/*
 * hamming_distance(int8, int8) returns int4, also the <-> operator.
 */
PG_FUNCTION_INFO_V1(hamming_distance);
Datum
hamming_distance(PG_FUNCTION_ARGS)
{
	int64		a = PG_GETARG_INT64(0);
	int64		b = PG_GETARG_INT64(1);

	PG_RETURN_INT32(bktreeDistance(a, b));
}

/*
 * bktree_contained(int8, bktree_area) returns bool, the <@ operator.
 */
PG_FUNCTION_INFO_V1(bktree_contained);
Datum
bktree_contained(PG_FUNCTION_ARGS)
{
	int64		hash = PG_GETARG_INT64(0);
	BkQuery		query;

	bktreeDecodeAreaCached(fcinfo->flinfo, PG_GETARG_DATUM(1), &query);
	PG_RETURN_BOOL(bktreeDistance(hash, query.center) <= query.radius);
}

/*
 * Fraction of uniformly random 64-bit hashes within distance r of a point:
 * sum_{i<=r} C(64,i) / 2^64.
 */
double
bktreeBinomialFraction(int radius)
{
	double		term = 1.0;		/* C(64, i) */
	double		sum = 0.0;
	int			i;

	if (radius < 0)
		return 0.0;
	for (i = 0; i <= radius && i <= BKTREE_MAX_DISTANCE; i++)
	{
		sum += term;
		term = term * (BKTREE_MAX_DISTANCE - i) / (i + 1);
	}
	return sum / 18446744073709551616.0;
}

/*
 * Extract the query from the planner's right operand.  On success, *query
 * gets the decoded condition; returns false if it is not known at plan time.
 * A NULL constant decodes to radius -1 (matches nothing).
 */
bool
bktreePlanTimeQuery(Node *other, BkQuery *query)
{
	if (IsA(other, Const))
	{
		Const	   *c = (Const *) other;

		if (c->constisnull)
		{
			query->center = 0;
			query->radius = -1;
		}
		else
			bktreeDecodeArea(c->constvalue, query);
		return true;
	}

	/* "hash <@ (123, 3)" arrives as a ROW() of two constants */
	if (IsA(other, RowExpr) && list_length(((RowExpr *) other)->args) == 2)
	{
		Node	   *center = linitial(((RowExpr *) other)->args);
		Node	   *radius = lsecond(((RowExpr *) other)->args);

		if (!IsA(center, Const) || !IsA(radius, Const) ||
			((Const *) center)->consttype != INT8OID ||
			((Const *) radius)->consttype != INT8OID)
			return false;
		if (((Const *) center)->constisnull || ((Const *) radius)->constisnull)
		{
			query->center = 0;
			query->radius = -1;
			return true;
		}
		query->center = DatumGetInt64(((Const *) center)->constvalue);
		query->radius =
			bktreeClampRadius(DatumGetInt64(((Const *) radius)->constvalue));
		return true;
	}
	return false;
}

/*
 * Estimate the fraction of non-NULL rows of the column described by
 * vardata that lie within query->radius of query->center.
 */
static double
areaSelectivity(VariableStatData *vardata, const BkQuery *query)
{
	double		binomial = bktreeBinomialFraction(query->radius);
	double		nullfrac = 0.0;
	double		mcvfrac = 0.0;
	double		mcvmatch = 0.0;
	double		rest;
	double		sel;
	bool		isdefault;
	double		ndistinct;
	AttStatsSlot sslot;
	int			i;

	if (query->radius < 0)
		return 0.0;
	if (query->radius >= BKTREE_MAX_DISTANCE)
	{
		if (HeapTupleIsValid(vardata->statsTuple))
			nullfrac = ((Form_pg_statistic) GETSTRUCT(vardata->statsTuple))->stanullfrac;
		return 1.0 - nullfrac;
	}

	if (!HeapTupleIsValid(vardata->statsTuple))
		return Max(binomial, DEFAULT_BKTREE_SEL * (query->radius + 1));

	nullfrac = ((Form_pg_statistic) GETSTRUCT(vardata->statsTuple))->stanullfrac;

	/* Most common values are counted exactly */
	if (get_attstatsslot(&sslot, vardata->statsTuple, STATISTIC_KIND_MCV,
						 InvalidOid, ATTSTATSSLOT_VALUES | ATTSTATSSLOT_NUMBERS))
	{
		for (i = 0; i < sslot.nvalues; i++)
		{
			mcvfrac += sslot.numbers[i];
			if (bktreeDistance(DatumGetInt64(sslot.values[i]), query->center) <= query->radius)
				mcvmatch += sslot.numbers[i];
		}
		free_attstatsslot(&sslot);
	}

	/* The rest: the binomial floor, 1/ndistinct, or the histogram sample */
	ndistinct = get_variable_numdistinct(vardata, &isdefault);
	sel = binomial;
	if (!isdefault && ndistinct > 0)
		sel = Max(sel, 1.0 / ndistinct);
	if (get_attstatsslot(&sslot, vardata->statsTuple, STATISTIC_KIND_HISTOGRAM,
						 InvalidOid, ATTSTATSSLOT_VALUES))
	{
		int			hits = 0;

		for (i = 0; i < sslot.nvalues; i++)
			if (bktreeDistance(DatumGetInt64(sslot.values[i]), query->center) <= query->radius)
				hits++;
		/* discount one hit: the query is often a value of the column itself */
		if (hits > 1 && sslot.nvalues > 0)
			sel = Max(sel, (double) (hits - 1) / sslot.nvalues);
		free_attstatsslot(&sslot);
	}

	rest = 1.0 - nullfrac - mcvfrac;
	if (rest < 0.0)
		rest = 0.0;
	return mcvmatch + rest * sel;
}

/*
 * bktree_area_sel: restriction selectivity of "int8 <@ bktree_area".
 */
PG_FUNCTION_INFO_V1(bktree_area_sel);
Datum
bktree_area_sel(PG_FUNCTION_ARGS)
{
	PlannerInfo *root = (PlannerInfo *) PG_GETARG_POINTER(0);
	List	   *args = (List *) PG_GETARG_POINTER(2);
	int			varRelid = PG_GETARG_INT32(3);
	VariableStatData vardata;
	Node	   *other;
	bool		varonleft;
	BkQuery		query;
	double		sel;

	if (!get_restriction_variable(root, args, varRelid,
								  &vardata, &other, &varonleft))
		PG_RETURN_FLOAT8(DEFAULT_BKTREE_SEL);

	if (!varonleft || !bktreePlanTimeQuery(other, &query))
	{
		ReleaseVariableStats(vardata);
		PG_RETURN_FLOAT8(DEFAULT_BKTREE_SEL);
	}

	sel = areaSelectivity(&vardata, &query);
	ReleaseVariableStats(vardata);
	CLAMP_PROBABILITY(sel);
	PG_RETURN_FLOAT8(sel);
}
