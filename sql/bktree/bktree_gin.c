/*-------------------------------------------------------------------------
 *
 * bktree_gin.c
 *	  Multi-index hashing over 64-bit hashes for GIN: the operator class
 *	  bktree_mih_ops.
 *
 * Multi-index hashing (Norouzi, Punjani and Fleet, 2012) cuts each hash
 * into m = 4 substrings of 16 bits and indexes every substring exactly; the
 * GIN key is the substring's index and value packed into an int4,
 * (i << 16) | value.  If d(v, q) <= r then, by the pigeonhole principle, at
 * least one substring of v lies within floor(r/4) bits of the same
 * substring of q.  A search therefore asks GIN for every 16-bit value within
 * t = floor(r/4) bits of each of q's substrings: 1 + 16 + 120 keys per
 * substring for t = 2.
 *
 * The consistent functions do better than "some key matched": a matched key
 * tells the substring's exact distance, and a substring with no matched key
 * is at least t + 1 away, so their sum is a lower bound on d(v, q) and
 * candidates above r are dropped before any heap access.  Survivors are
 * rechecked against the heap.
 *
 * For t >= 3 the enumeration grows to 697 keys per substring and a match
 * on one substring says little, so radius >= 12 scans the whole index
 * (GIN_SEARCH_MODE_ALL); the planner, told so by extract_query, prefers a
 * sequential scan there.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree_gin.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/gin.h"
#include "access/stratnum.h"
#include "fmgr.h"

#include "bktree.h"

#define MIH_SUBSTRINGS	4
#define MIH_BITS		16
#define MIH_MASK		0xFFFF

/* Largest per-substring distance still enumerated (see file header) */
#define MIH_MAX_ENUMERATED	2

/*
 * What the consistent functions need to know about the query; every
 * extra_data pointer of one query points to the same MihQuery.
 */
typedef struct MihQuery
{
	int			radius;			/* clamped radius r */
	int			perSubstring;	/* t = floor(r / 4) */
	uint8	   *keySubstring;	/* per key: which substring */
	uint8	   *keyDistance;	/* per key: its distance to q's substring */
} MihQuery;

static inline int32
mihKey(int substring, uint32 value)
{
	return (int32) (((uint32) substring << MIH_BITS) | (value & MIH_MASK));
}

static inline uint32
mihSubstring(int64 hash, int substring)
{
	return (uint32) (((uint64) hash >> (MIH_BITS * substring)) & MIH_MASK);
}

PG_FUNCTION_INFO_V1(bktree_mih_extract_value);
Datum
bktree_mih_extract_value(PG_FUNCTION_ARGS)
{
	int64		hash = PG_GETARG_INT64(0);
	int32	   *nkeys = (int32 *) PG_GETARG_POINTER(1);
	Datum	   *keys = (Datum *) palloc(sizeof(Datum) * MIH_SUBSTRINGS);
	int			i;

	for (i = 0; i < MIH_SUBSTRINGS; i++)
		keys[i] = Int32GetDatum(mihKey(i, mihSubstring(hash, i)));
	*nkeys = MIH_SUBSTRINGS;
	PG_RETURN_POINTER(keys);
}

/*
 * Append to keys[] every 16-bit value within maxDistance bits of base, as
 * keys of the given substring, recording each key's substring and distance
 * in info.  *n is the number of keys so far; it is advanced.
 */
static void
enumerateNeighbours(int substring, uint32 base, int maxDistance,
					Datum *keys, MihQuery *info, int *n)
{
	int			a;
	int			b;

#define ADD_KEY(value, distance) \
	do { \
		keys[*n] = Int32GetDatum(mihKey(substring, (value))); \
		info->keySubstring[*n] = substring; \
		info->keyDistance[*n] = (distance); \
		(*n)++; \
	} while (0)

	ADD_KEY(base, 0);
	if (maxDistance >= 1)
		for (a = 0; a < MIH_BITS; a++)
			ADD_KEY(base ^ (1U << a), 1);
	if (maxDistance >= 2)
		for (a = 0; a < MIH_BITS; a++)
			for (b = a + 1; b < MIH_BITS; b++)
				ADD_KEY(base ^ (1U << a) ^ (1U << b), 2);
	Assert(maxDistance <= MIH_MAX_ENUMERATED);
#undef ADD_KEY
}

PG_FUNCTION_INFO_V1(bktree_mih_extract_query);
Datum
bktree_mih_extract_query(PG_FUNCTION_ARGS)
{
	int32	   *nkeys = (int32 *) PG_GETARG_POINTER(1);
	StrategyNumber strategy = PG_GETARG_UINT16(2);

	/* bool   **pmatch = (bool **) PG_GETARG_POINTER(3); */
	Pointer   **extra_data = (Pointer **) PG_GETARG_POINTER(4);

	/* bool   **nullFlags = (bool **) PG_GETARG_POINTER(5); */
	int32	   *searchMode = (int32 *) PG_GETARG_POINTER(6);
	BkQuery		query;
	MihQuery   *info;
	Datum	   *keys;
	int			perSubstring;
	int			maxKeys;
	int			n = 0;
	int			i;

	switch (strategy)
	{
		case BKTREE_CONTAINED_STRATEGY:
			bktreeDecodeArea(PG_GETARG_DATUM(0), &query);
			break;
		default:
			elog(ERROR, "unrecognized strategy number: %d", strategy);
			query.radius = -1;	/* keep compiler quiet */
			break;
	}

	/* A negative radius or NULL field: no keys, unsatisfiable query */
	if (query.radius < 0)
	{
		*nkeys = 0;
		*searchMode = GIN_SEARCH_MODE_DEFAULT;
		PG_RETURN_POINTER(NULL);
	}

	/*
	 * Radius >= 12: enumeration explodes and a substring match barely
	 * filters, so visit every indexed hash (the recheck decides).
	 */
	perSubstring = query.radius / MIH_SUBSTRINGS;
	if (perSubstring > MIH_MAX_ENUMERATED)
	{
		*nkeys = 0;
		*searchMode = GIN_SEARCH_MODE_ALL;
		PG_RETURN_POINTER(NULL);
	}

	maxKeys = MIH_SUBSTRINGS *
		(1 + (perSubstring >= 1 ? MIH_BITS : 0) +
		 (perSubstring >= 2 ? MIH_BITS * (MIH_BITS - 1) / 2 : 0));
	keys = (Datum *) palloc(sizeof(Datum) * maxKeys);
	info = (MihQuery *) palloc(sizeof(MihQuery));
	info->radius = query.radius;
	info->perSubstring = perSubstring;
	info->keySubstring = (uint8 *) palloc(maxKeys);
	info->keyDistance = (uint8 *) palloc(maxKeys);

	for (i = 0; i < MIH_SUBSTRINGS; i++)
		enumerateNeighbours(i, mihSubstring(query.center, i), perSubstring,
							keys, info, &n);
	Assert(n == maxKeys);

	*extra_data = (Pointer *) palloc(sizeof(Pointer) * n);
	for (i = 0; i < n; i++)
		(*extra_data)[i] = (Pointer) info;
	*nkeys = n;
	*searchMode = GIN_SEARCH_MODE_DEFAULT;
	PG_RETURN_POINTER(keys);
}

/*
 * Lower bound on d(v, q) for an indexed hash v, given which keys it may
 * contain (present[i]).  A substring with a present key is exactly that
 * key's distance away (v has one value per substring); one without is at
 * least t + 1 away, or pigeonhole would have found it.
 */
static int
mihLowerBound(const MihQuery *info, const bool *present, int nkeys)
{
	int			best[MIH_SUBSTRINGS];
	int			bound = 0;
	int			i;

	for (i = 0; i < MIH_SUBSTRINGS; i++)
		best[i] = info->perSubstring + 1;
	for (i = 0; i < nkeys; i++)
	{
		if (present[i] && info->keyDistance[i] < best[info->keySubstring[i]])
			best[info->keySubstring[i]] = info->keyDistance[i];
	}
	for (i = 0; i < MIH_SUBSTRINGS; i++)
		bound += best[i];
	return bound;
}

PG_FUNCTION_INFO_V1(bktree_mih_consistent);
Datum
bktree_mih_consistent(PG_FUNCTION_ARGS)
{
	bool	   *check = (bool *) PG_GETARG_POINTER(0);
	StrategyNumber strategy = PG_GETARG_UINT16(1);

	/* bktree_area query = PG_GETARG_DATUM(2); */
	int32		nkeys = PG_GETARG_INT32(3);
	Pointer    *extra_data = (Pointer *) PG_GETARG_POINTER(4);
	bool	   *recheck = (bool *) PG_GETARG_POINTER(5);

	if (strategy != BKTREE_CONTAINED_STRATEGY)
		elog(ERROR, "unrecognized strategy number: %d", strategy);

	/* All cases served by this function are inexact */
	*recheck = true;

	/* GIN_SEARCH_MODE_ALL: every hash is a candidate */
	if (nkeys == 0)
		PG_RETURN_BOOL(true);

	PG_RETURN_BOOL(mihLowerBound((MihQuery *) extra_data[0], check, nkeys) <=
				   ((MihQuery *) extra_data[0])->radius);
}

PG_FUNCTION_INFO_V1(bktree_mih_triconsistent);
Datum
bktree_mih_triconsistent(PG_FUNCTION_ARGS)
{
	GinTernaryValue *check = (GinTernaryValue *) PG_GETARG_POINTER(0);
	StrategyNumber strategy = PG_GETARG_UINT16(1);

	/* bktree_area query = PG_GETARG_DATUM(2); */
	int32		nkeys = PG_GETARG_INT32(3);
	Pointer    *extra_data = (Pointer *) PG_GETARG_POINTER(4);
	bool		localPresent[64];
	bool	   *present = localPresent;
	MihQuery   *info;
	int			i;

	if (strategy != BKTREE_CONTAINED_STRATEGY)
		elog(ERROR, "unrecognized strategy number: %d", strategy);

	/* All cases served by this function are inexact: MAYBE, never TRUE */
	if (nkeys == 0)
		PG_RETURN_GIN_TERNARY_VALUE(GIN_MAYBE);

	/* the most favourable case: every MAYBE key present */
	if (nkeys > lengthof(localPresent))
		present = (bool *) palloc(sizeof(bool) * nkeys);
	for (i = 0; i < nkeys; i++)
		present[i] = (check[i] != GIN_FALSE);

	info = (MihQuery *) extra_data[0];
	if (mihLowerBound(info, present, nkeys) > info->radius)
		PG_RETURN_GIN_TERNARY_VALUE(GIN_FALSE);
	PG_RETURN_GIN_TERNARY_VALUE(GIN_MAYBE);
}
