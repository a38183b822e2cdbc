/*-------------------------------------------------------------------------
 *
 * bktree_mih.c
 *	  Multi-index hashing with the whole hash in every key: the operator
 *	  class bktree_mih_ops of the access method bktree_mih (version 1.1).
 *
 * The 1.0 class (bktree_gin.c) keys GIN on the 16-bit substrings alone, so
 * a candidate is known only as "some substring is near": GIN merges every
 * enumerated key's posting list item by item and the heap decides.  Here
 * each hash v gives four int8 keys, v rotated so that substring i is the
 * top 16 bits:
 *
 *	  key_i = rotl(v, 48 - 16 i)		(substring i = bits 16i .. 16i+15)
 *
 * In GIN's entry tree, sorted by key, the keys whose top 16 bits equal a
 * value s form one contiguous run (a "bucket"), and each key holds all of
 * v.  A search for "within r of q" enumerates, per substring, the values s
 * near q's substring (pigeonhole, as in bktree_gin.c: r = 4t + a, depth t
 * for the first a + 1 substrings, t - 1 for the rest) and asks GIN for a
 * partial match starting at s << 48: comparePartial rotates each key of
 * the bucket back and keeps it if its 62 known bits are within r of q's.
 * So the distance is computed inside the index, on the entry tree pages,
 * and only matches (and the few within r + 2 through the two unknown bits)
 * reach the heap, where they are rechecked.  Enumerated depth goes to 4 (2,517 values per
 * substring), i.e. radius 19, which is what the nearest-neighbour search
 * needs on uniform hashes (the 10th nearest of 10M random hashes is about
 * 12 bits away); radius 20 and more scan the whole index.
 *
 * Each enumerated bucket is one scan entry: 188 at radius 8 (137 values of
 * substring 0 at depth 2, 17 of each other at depth 1), each a descent of
 * the entry tree and ~N/65536 keys.  GIN also compares every row of its
 * pending list with every entry, which is why bktree_mih indexes have no
 * pending list by default (bktree_am.c).
 *
 * The price is size: four entry tuples of ~24 bytes per distinct hash,
 * against four ~2-byte posting list items in bktree_gin.c.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree_mih.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/gin.h"
#include "access/stratnum.h"
#include "fmgr.h"

#include "bktree.h"

#define MIHX_BITS		16
#define MIHX_VALUES		(1 << MIHX_BITS)

#define MIHX_VALUE_SHIFT	46		/* a key's substring value: bits 46..61 */

/* What comparePartial needs about the query: one per scan */
typedef struct MihxQuery
{
	int64		center;
	int			radius;
} MihxQuery;

/* Number of 16-bit values within d bits of a point, d = 0..3 cumulative */
static const int mihxBallSize[BKTREE_MIHX_MAX_DEPTH + 1] = {1, 17, 137, 697, 2517};

static inline uint64
rotl64(uint64 x, int n)
{
	n &= 63;
	return n == 0 ? x : (x << n) | (x >> (64 - n));
}

static inline int64
mihxKey(int64 hash, int substring)
{
	return (int64) (((uint64) substring << 62) |
					(rotl64((uint64) hash, 48 - MIHX_BITS * substring) >> 2));
}

/* The first key of the bucket of substring value s */
static inline int64
mihxBucketStart(uint32 s, int substring)
{
	return (int64) (((uint64) substring << 62) | ((uint64) s << MIHX_VALUE_SHIFT));
}

/*
 * The enumeration depth per substring for a search of the given radius
 * (>= 0) into depth[MIH_SUBSTRINGS]; returns the number of buckets read, or
 * -1 when the radius is too wide and the whole index is scanned.  The cost
 * estimate (bktree_am.c) counts buckets the same way.
 */
int
bktreeMihxDepths(int radius, int *depth)
{
	int			perSubstring = radius / MIH_SUBSTRINGS;
	int			nbuckets = 0;
	int			i;

	if (perSubstring > BKTREE_MIHX_MAX_DEPTH)
		return -1;
	for (i = 0; i < MIH_SUBSTRINGS; i++)
	{
		depth[i] = i <= radius % MIH_SUBSTRINGS ? perSubstring : perSubstring - 1;
		if (depth[i] >= 0)
			nbuckets += mihxBallSize[depth[i]];
	}
	return nbuckets;
}

PG_FUNCTION_INFO_V1(bktree_mihx_extract_value);
Datum
bktree_mihx_extract_value(PG_FUNCTION_ARGS)
{
	int64		hash = PG_GETARG_INT64(0);
	int32	   *nkeys = (int32 *) PG_GETARG_POINTER(1);
	Datum	   *keys = (Datum *) palloc(sizeof(Datum) * MIH_SUBSTRINGS);
	int			i;

	for (i = 0; i < MIH_SUBSTRINGS; i++)
		keys[i] = Int64GetDatum(mihxKey(hash, i));
	*nkeys = MIH_SUBSTRINGS;
	PG_RETURN_POINTER(keys);
}

PG_FUNCTION_INFO_V1(bktree_mihx_extract_query);
Datum
bktree_mihx_extract_query(PG_FUNCTION_ARGS)
{
	int32	   *nkeys = (int32 *) PG_GETARG_POINTER(1);
	StrategyNumber strategy = PG_GETARG_UINT16(2);
	bool	  **pmatch = (bool **) PG_GETARG_POINTER(3);
	Pointer   **extra_data = (Pointer **) PG_GETARG_POINTER(4);

	/* bool   **nullFlags = (bool **) PG_GETARG_POINTER(5); */
	int32	   *searchMode = (int32 *) PG_GETARG_POINTER(6);
	BkQuery		query;
	MihxQuery  *info;
	Datum	   *keys;
	int			depth[MIH_SUBSTRINGS];
	int			nbuckets;
	int			n = 0;
	int			i;

	bktreeDecodeKey(NULL, strategy, InvalidOid, PG_GETARG_DATUM(0), &query);

	/* A negative radius or NULL field: no keys, unsatisfiable query */
	*searchMode = GIN_SEARCH_MODE_DEFAULT;
	*nkeys = 0;
	if (query.radius < 0)
		PG_RETURN_POINTER(NULL);

	nbuckets = bktreeMihxDepths(query.radius, depth);
	if (nbuckets < 0)
	{
		*searchMode = GIN_SEARCH_MODE_ALL;
		PG_RETURN_POINTER(NULL);
	}

	info = (MihxQuery *) palloc(sizeof(MihxQuery));
	info->center = query.center;
	info->radius = query.radius;
	keys = (Datum *) palloc(sizeof(Datum) * nbuckets);
	*pmatch = (bool *) palloc(sizeof(bool) * nbuckets);
	*extra_data = (Pointer *) palloc(sizeof(Pointer) * nbuckets);

	for (i = 0; i < MIH_SUBSTRINGS; i++)
	{
		uint32		base = (uint32) ((uint64) query.center >> (MIHX_BITS * i)) & (MIHX_VALUES - 1);
		int			d;

		for (d = 0; d <= depth[i]; d++)
		{
			uint32		mask;

			/* every 16-bit mask with d bits set, in increasing order (Gosper) */
			for (mask = (1U << d) - 1; mask < MIHX_VALUES;)
			{
				keys[n] = Int64GetDatum(mihxBucketStart(base ^ mask, i));
				(*pmatch)[n] = true;
				(*extra_data)[n] = (Pointer) info;
				n++;
				if (mask == 0)
					break;
				{
					uint32		c = mask & -mask;
					uint32		r = mask + c;

					mask = (((r ^ mask) >> 2) / c) | r;
				}
			}
		}
	}
	Assert(n == nbuckets);
	*nkeys = n;
	PG_RETURN_POINTER(keys);
}

/*
 * comparePartial: 0 for a key of the bucket within the radius, -1 for one
 * of the bucket that is not (keep scanning), 1 past the bucket (stop).
 */
PG_FUNCTION_INFO_V1(bktree_mihx_compare_partial);
Datum
bktree_mihx_compare_partial(PG_FUNCTION_ARGS)
{
	uint64		start = (uint64) PG_GETARG_INT64(0);
	uint64		key = (uint64) PG_GETARG_INT64(1);
	MihxQuery  *info = (MihxQuery *) PG_GETARG_POINTER(3);
	int			substring = (int) (key >> 62);
	int			shift = 48 - MIHX_BITS * substring;
	uint64		known;
	uint64		value;

	if ((key >> MIHX_VALUE_SHIFT) != (start >> MIHX_VALUE_SHIFT))
		PG_RETURN_INT32((int64) key < (int64) start ? -1 : 1);

	/* undo the rotation; the two bits shifted out are unknown */
	value = rotl64(key << 2, 64 - shift);
	known = ~rotl64(UINT64CONST(3), 64 - shift);
	if (bktreeDistance((int64) (value & known), (int64) ((uint64) info->center & known)) <= info->radius)
		PG_RETURN_INT32(0);
	PG_RETURN_INT32(-1);
}

/*
 * What both consistent functions answer: GIN_MAYBE (recheck: two bits of a
 * key are unknown) when some bucket key of v matched in comparePartial,
 * else GIN_FALSE; the bool function passes its check[] as is (see
 * mihMatch in bktree_gin.c).
 */
static GinTernaryValue
mihxMatch(const GinTernaryValue *check, int32 nkeys)
{
	int			i;

	if (nkeys == 0)
		return GIN_MAYBE;		/* GIN_SEARCH_MODE_ALL */
	for (i = 0; i < nkeys; i++)
		if (check[i] != GIN_FALSE)
			return GIN_MAYBE;
	return GIN_FALSE;
}

PG_FUNCTION_INFO_V1(bktree_mihx_consistent);
Datum
bktree_mihx_consistent(PG_FUNCTION_ARGS)
{
	bool	   *recheck = (bool *) PG_GETARG_POINTER(5);

	*recheck = true;
	PG_RETURN_BOOL(mihxMatch((GinTernaryValue *) PG_GETARG_POINTER(0),
							 PG_GETARG_INT32(3)) != GIN_FALSE);
}

PG_FUNCTION_INFO_V1(bktree_mihx_triconsistent);
Datum
bktree_mihx_triconsistent(PG_FUNCTION_ARGS)
{
	PG_RETURN_GIN_TERNARY_VALUE(mihxMatch((GinTernaryValue *) PG_GETARG_POINTER(0),
										  PG_GETARG_INT32(3)));
}
