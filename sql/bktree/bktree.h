/*-------------------------------------------------------------------------
 *
 * bktree.h
 *	  Shared declarations for the bktree extension: Hamming distance on
 *	  64-bit hashes and the decoded form of a bktree_area query.
 *
 * The popcount is inline because it runs once per leaf tuple visited.  With
 * -mpopcnt (the Makefile adds it when the build machine's CPU has the
 * instruction) __builtin_popcountll compiles to a single POPCNT; without it
 * the compiler emits its own bit-twiddling sequence, and compilers without
 * the builtin get the portable SWAR fallback below.
 *
 * Copyright (c) 2024, wikihash authors
 *
 * IDENTIFICATION
 *	  sql/bktree/bktree.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BKTREE_H
#define BKTREE_H

#include "postgres.h"

#include "access/stratnum.h"
#include "fmgr.h"
#include "nodes/nodes.h"

/* Strategy numbers shared by bktree_ops (SP-GiST) and bktree_mih_ops (GIN) */
#define BKTREE_CONTAINED_STRATEGY	1	/* int8 <@ bktree_area */
#define BKTREE_DISTANCE_STRATEGY	2	/* int8 <-> int8, ORDER BY only */
#define BKTREE_EQUAL_STRATEGY		3	/* int8 = int8, int4 or int2 */

/* Hashes are 64 bits, so every distance lies in 0..BKTREE_MAX_DISTANCE */
#define BKTREE_MAX_DISTANCE			64

/*
 * Hamming distance between two 64-bit hashes.
 */
static inline int
bktreeDistance(int64 a, int64 b)
{
	uint64		x = (uint64) a ^ (uint64) b;

#if defined(__GNUC__) || defined(__clang__)
	return __builtin_popcountll(x);
#else
	x = x - ((x >> 1) & UINT64CONST(0x5555555555555555));
	x = (x & UINT64CONST(0x3333333333333333)) +
		((x >> 2) & UINT64CONST(0x3333333333333333));
	x = (x + (x >> 4)) & UINT64CONST(0x0f0f0f0f0f0f0f0f);
	return (int) ((x * UINT64CONST(0x0101010101010101)) >> 56);
#endif
}

/*
 * A search condition decoded once: "distance to center <= radius".
 *
 * The radius is clamped to -1..BKTREE_MAX_DISTANCE: -1 (a negative radius,
 * or a NULL center or distance inside the composite) matches nothing, and
 * BKTREE_MAX_DISTANCE matches every non-NULL hash.  The '=' strategy
 * decodes to radius 0.
 */
typedef struct BkQuery
{
	int64		center;
	int			radius;
} BkQuery;

/* bktree_ops.c */
extern int	bktreeClampRadius(int64 radius);
extern void bktreeDecodeArea(Datum area, BkQuery *query);
extern void bktreeDecodeAreaCached(FmgrInfo *flinfo, Datum area, BkQuery *query);
extern void bktreeDecodeKey(FmgrInfo *flinfo, StrategyNumber strategy, Oid subtype,
							Datum argument, BkQuery *query);
extern double bktreeBinomialFraction(int radius);
extern bool bktreePlanTimeQuery(Node *other, BkQuery *query);

/* bktree_gin.c */
#define MIH_SUBSTRINGS	4
extern int	bktreeMihDepths(int radius, int *depth);

/* bktree_mih.c: substrings are enumerated to 4 bits, radius 19 */
#define BKTREE_MIHX_MAX_DEPTH	4
extern int	bktreeMihxDepths(int radius, int *depth);

#endif							/* BKTREE_H */
