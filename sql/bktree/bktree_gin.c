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
 * least one substring of v lies within t = floor(r/4) bits of the same
 * substring of q.  Sharper, writing r = 4t + a (0 <= a < 4): one of the
 * first a + 1 substrings is within t bits, or one of the others is within
 * t - 1 bits; otherwise d(v, q) >= (a+1)(t+1) + (3-a)t = r + 1.  A search
 * therefore asks GIN (for t = 2; see extract_query) for every 16-bit value
 * within t bits of q's first a + 1 substrings and within t - 1 bits of the
 * rest (1, 16 and 120 values at distance 0, 1 and 2): for r = 8 that is
 * 137 + 3 * 17 = 188 keys, not 548.
 *
 * The consistent functions do better than "some key matched": a matched key
 * tells the substring's exact distance, and a substring with no matched key
 * is further away than the depth it was enumerated to, so their sum is a
 * lower bound on d(v, q) and candidates above r are dropped before any heap
 * access.  Survivors are rechecked against the heap.
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
	int			depth[MIH_SUBSTRINGS];	/* per substring: values enumerated
										 * up to this distance, or -1 */
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
	Assert(maxDistance >= 0 && maxDistance <= MIH_MAX_ENUMERATED);
#undef ADD_KEY
}

/*
 * The enumeration depth per substring for a search of the given radius
 * (>= 0) into depth[MIH_SUBSTRINGS]; returns the number of keys, or -1 when
 * the radius is too wide to enumerate and the whole index is scanned.  The
 * cost estimate (bktree_am.c) counts keys the same way.
 *
 * r = 4t + a: depth t for the first a + 1 substrings, t - 1 after.  Only
 * worth it for t = 2, where it saves up to 360 keys; for t <= 1 the full
 * depth costs at most 48 more keys and the extra matches let the lower
 * bound reject more candidates before the heap.
 */
int
bktreeMihDepths(int radius, int *depth)
{
	int			perSubstring = radius / MIH_SUBSTRINGS;
	int			nkeys = 0;
	int			i;

	if (perSubstring > MIH_MAX_ENUMERATED)
		return -1;
	for (i = 0; i < MIH_SUBSTRINGS; i++)
	{
		if (perSubstring < 2 || i <= radius % MIH_SUBSTRINGS)
			depth[i] = perSubstring;
		else
			depth[i] = perSubstring - 1;
		if (depth[i] >= 0)
			nkeys += 1 + (depth[i] >= 1 ? MIH_BITS : 0) +
				(depth[i] >= 2 ? MIH_BITS * (MIH_BITS - 1) / 2 : 0);
	}
	return nkeys;
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
	int			depth[MIH_SUBSTRINGS];
	int			maxKeys;
	int			n = 0;
	int			i;

	bktreeDecodeKey(NULL, strategy, InvalidOid, PG_GETARG_DATUM(0), &query);

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
	maxKeys = bktreeMihDepths(query.radius, depth);
	if (maxKeys < 0)
	{
		*nkeys = 0;
		*searchMode = GIN_SEARCH_MODE_ALL;
		PG_RETURN_POINTER(NULL);
	}

	keys = (Datum *) palloc(sizeof(Datum) * maxKeys);
	info = (MihQuery *) palloc(sizeof(MihQuery));
	info->radius = query.radius;
	memcpy(info->depth, depth, sizeof(depth));
	info->keySubstring = (uint8 *) palloc(maxKeys);
	info->keyDistance = (uint8 *) palloc(maxKeys);

	for (i = 0; i < MIH_SUBSTRINGS; i++)
	{
		if (depth[i] >= 0)
			enumerateNeighbours(i, mihSubstring(query.center, i), depth[i],
								keys, info, &n);
	}
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
 * contain (check[i] != GIN_FALSE).  A substring with a present key is
 * exactly that key's distance away (v has one value per substring); one
 * without is further than the depth it was enumerated to (a depth of -1
 * means no keys and a bound of 0).
 */
static int
mihLowerBound(const MihQuery *info, const GinTernaryValue *check, int nkeys)
{
	int			best[MIH_SUBSTRINGS];
	int			bound = 0;
	int			i;

	for (i = 0; i < MIH_SUBSTRINGS; i++)
		best[i] = info->depth[i] + 1;
	for (i = 0; i < nkeys; i++)
	{
		if (check[i] != GIN_FALSE && info->keyDistance[i] < best[info->keySubstring[i]])
			best[info->keySubstring[i]] = info->keyDistance[i];
	}
	for (i = 0; i < MIH_SUBSTRINGS; i++)
		bound += best[i];
	return bound;
}

/*
 * What both consistent functions answer: GIN_MAYBE (recheck) when v may be
 * within the radius, taking every MAYBE key as present (the most
 * favourable case), else GIN_FALSE.  Never GIN_TRUE: a key gives one
 * substring's distance only.  The bool consistent function passes its
 * check[] as is (false and true are GIN_FALSE and GIN_TRUE), as GIN's own
 * shim between the two does the other way round (ginlogic.c).
 */
static GinTernaryValue
mihMatch(StrategyNumber strategy, const GinTernaryValue *check, int32 nkeys,
		 Pointer *extra_data)
{
	const MihQuery *info;

	if (strategy != BKTREE_CONTAINED_STRATEGY)
		elog(ERROR, "unrecognized strategy number: %d", strategy);
	if (nkeys == 0)
		return GIN_MAYBE;		/* GIN_SEARCH_MODE_ALL: every hash */
	info = (const MihQuery *) extra_data[0];
	return mihLowerBound(info, check, nkeys) <= info->radius ? GIN_MAYBE : GIN_FALSE;
}

PG_FUNCTION_INFO_V1(bktree_mih_consistent);
Datum
bktree_mih_consistent(PG_FUNCTION_ARGS)
{
	bool	   *recheck = (bool *) PG_GETARG_POINTER(5);

	*recheck = true;
	PG_RETURN_BOOL(mihMatch(PG_GETARG_UINT16(1), (GinTernaryValue *) PG_GETARG_POINTER(0),
							PG_GETARG_INT32(3), (Pointer *) PG_GETARG_POINTER(4)) != GIN_FALSE);
}

PG_FUNCTION_INFO_V1(bktree_mih_triconsistent);
Datum
bktree_mih_triconsistent(PG_FUNCTION_ARGS)
{
	PG_RETURN_GIN_TERNARY_VALUE(mihMatch(PG_GETARG_UINT16(1),
										 (GinTernaryValue *) PG_GETARG_POINTER(0),
										 PG_GETARG_INT32(3),
										 (Pointer *) PG_GETARG_POINTER(4)));
}
