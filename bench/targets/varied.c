/* varied: every call of leaf() has a new stack, 1-40 frames deep below main's loop, for the
 * cost of -g dwarf when no two stacks repeat (the unwinder's memo never hits). Level k is one
 * of two functions chosen by bit k of the call's index, so call i's stack is
 * (depth, path) = (1 + i % 40, i), distinct for i < 2^40. Generated (40 levels x 2).
 *
 * Build: gcc -O1 -g -fomit-frame-pointer -fcf-protection=none -o varied varied.c
 * Usage: varied N; prints elapsed_ns=<loop time> calls=N ns_per_call=... acc=<checksum>
 * cpu_ns=<own CPU time> tracer_cpu_ns=<CPU time the tracer (parent, or $BENCH_TRACER_PID)
 * used during the loop; -1 if unknown>, as hammer.c does (bench/run's kernel_dwarf section
 * reads the recorder's CPU per event from it). Only the loop is timed. main and proc_cpu_ns
 * are written by hand, the levels generated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#define NOINLINE __attribute__((noinline, noclone))
volatile unsigned long sink;
NOINLINE unsigned long leaf(unsigned long path) {
    /* clobbering %rbx makes gcc save it: the first instruction is `push %rbx`, which the
     * kernel emulates (no single-step), as on most functions built without frame pointers */
    __asm__ volatile("" ::: "rbx");
    sink += path;
    return path + 1;
}

unsigned long l0a(unsigned long, int);
unsigned long l0b(unsigned long, int);
unsigned long l1a(unsigned long, int);
unsigned long l1b(unsigned long, int);
unsigned long l2a(unsigned long, int);
unsigned long l2b(unsigned long, int);
unsigned long l3a(unsigned long, int);
unsigned long l3b(unsigned long, int);
unsigned long l4a(unsigned long, int);
unsigned long l4b(unsigned long, int);
unsigned long l5a(unsigned long, int);
unsigned long l5b(unsigned long, int);
unsigned long l6a(unsigned long, int);
unsigned long l6b(unsigned long, int);
unsigned long l7a(unsigned long, int);
unsigned long l7b(unsigned long, int);
unsigned long l8a(unsigned long, int);
unsigned long l8b(unsigned long, int);
unsigned long l9a(unsigned long, int);
unsigned long l9b(unsigned long, int);
unsigned long l10a(unsigned long, int);
unsigned long l10b(unsigned long, int);
unsigned long l11a(unsigned long, int);
unsigned long l11b(unsigned long, int);
unsigned long l12a(unsigned long, int);
unsigned long l12b(unsigned long, int);
unsigned long l13a(unsigned long, int);
unsigned long l13b(unsigned long, int);
unsigned long l14a(unsigned long, int);
unsigned long l14b(unsigned long, int);
unsigned long l15a(unsigned long, int);
unsigned long l15b(unsigned long, int);
unsigned long l16a(unsigned long, int);
unsigned long l16b(unsigned long, int);
unsigned long l17a(unsigned long, int);
unsigned long l17b(unsigned long, int);
unsigned long l18a(unsigned long, int);
unsigned long l18b(unsigned long, int);
unsigned long l19a(unsigned long, int);
unsigned long l19b(unsigned long, int);
unsigned long l20a(unsigned long, int);
unsigned long l20b(unsigned long, int);
unsigned long l21a(unsigned long, int);
unsigned long l21b(unsigned long, int);
unsigned long l22a(unsigned long, int);
unsigned long l22b(unsigned long, int);
unsigned long l23a(unsigned long, int);
unsigned long l23b(unsigned long, int);
unsigned long l24a(unsigned long, int);
unsigned long l24b(unsigned long, int);
unsigned long l25a(unsigned long, int);
unsigned long l25b(unsigned long, int);
unsigned long l26a(unsigned long, int);
unsigned long l26b(unsigned long, int);
unsigned long l27a(unsigned long, int);
unsigned long l27b(unsigned long, int);
unsigned long l28a(unsigned long, int);
unsigned long l28b(unsigned long, int);
unsigned long l29a(unsigned long, int);
unsigned long l29b(unsigned long, int);
unsigned long l30a(unsigned long, int);
unsigned long l30b(unsigned long, int);
unsigned long l31a(unsigned long, int);
unsigned long l31b(unsigned long, int);
unsigned long l32a(unsigned long, int);
unsigned long l32b(unsigned long, int);
unsigned long l33a(unsigned long, int);
unsigned long l33b(unsigned long, int);
unsigned long l34a(unsigned long, int);
unsigned long l34b(unsigned long, int);
unsigned long l35a(unsigned long, int);
unsigned long l35b(unsigned long, int);
unsigned long l36a(unsigned long, int);
unsigned long l36b(unsigned long, int);
unsigned long l37a(unsigned long, int);
unsigned long l37b(unsigned long, int);
unsigned long l38a(unsigned long, int);
unsigned long l38b(unsigned long, int);
unsigned long l39a(unsigned long, int);
unsigned long l39b(unsigned long, int);
NOINLINE unsigned long l39a(unsigned long path, int depth) {
    unsigned long r = depth <= 40 ? leaf(path) : leaf(path);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l39b(unsigned long path, int depth) {
    unsigned long r = depth <= 40 ? leaf(path) : leaf(path);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l38a(unsigned long path, int depth) {
    unsigned long r = depth <= 39 ? leaf(path) : (((path >> 39) & 1) ? l39b : l39a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l38b(unsigned long path, int depth) {
    unsigned long r = depth <= 39 ? leaf(path) : (((path >> 39) & 1) ? l39b : l39a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l37a(unsigned long path, int depth) {
    unsigned long r = depth <= 38 ? leaf(path) : (((path >> 38) & 1) ? l38b : l38a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l37b(unsigned long path, int depth) {
    unsigned long r = depth <= 38 ? leaf(path) : (((path >> 38) & 1) ? l38b : l38a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l36a(unsigned long path, int depth) {
    unsigned long r = depth <= 37 ? leaf(path) : (((path >> 37) & 1) ? l37b : l37a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l36b(unsigned long path, int depth) {
    unsigned long r = depth <= 37 ? leaf(path) : (((path >> 37) & 1) ? l37b : l37a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l35a(unsigned long path, int depth) {
    unsigned long r = depth <= 36 ? leaf(path) : (((path >> 36) & 1) ? l36b : l36a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l35b(unsigned long path, int depth) {
    unsigned long r = depth <= 36 ? leaf(path) : (((path >> 36) & 1) ? l36b : l36a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l34a(unsigned long path, int depth) {
    unsigned long r = depth <= 35 ? leaf(path) : (((path >> 35) & 1) ? l35b : l35a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l34b(unsigned long path, int depth) {
    unsigned long r = depth <= 35 ? leaf(path) : (((path >> 35) & 1) ? l35b : l35a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l33a(unsigned long path, int depth) {
    unsigned long r = depth <= 34 ? leaf(path) : (((path >> 34) & 1) ? l34b : l34a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l33b(unsigned long path, int depth) {
    unsigned long r = depth <= 34 ? leaf(path) : (((path >> 34) & 1) ? l34b : l34a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l32a(unsigned long path, int depth) {
    unsigned long r = depth <= 33 ? leaf(path) : (((path >> 33) & 1) ? l33b : l33a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l32b(unsigned long path, int depth) {
    unsigned long r = depth <= 33 ? leaf(path) : (((path >> 33) & 1) ? l33b : l33a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l31a(unsigned long path, int depth) {
    unsigned long r = depth <= 32 ? leaf(path) : (((path >> 32) & 1) ? l32b : l32a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l31b(unsigned long path, int depth) {
    unsigned long r = depth <= 32 ? leaf(path) : (((path >> 32) & 1) ? l32b : l32a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l30a(unsigned long path, int depth) {
    unsigned long r = depth <= 31 ? leaf(path) : (((path >> 31) & 1) ? l31b : l31a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l30b(unsigned long path, int depth) {
    unsigned long r = depth <= 31 ? leaf(path) : (((path >> 31) & 1) ? l31b : l31a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l29a(unsigned long path, int depth) {
    unsigned long r = depth <= 30 ? leaf(path) : (((path >> 30) & 1) ? l30b : l30a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l29b(unsigned long path, int depth) {
    unsigned long r = depth <= 30 ? leaf(path) : (((path >> 30) & 1) ? l30b : l30a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l28a(unsigned long path, int depth) {
    unsigned long r = depth <= 29 ? leaf(path) : (((path >> 29) & 1) ? l29b : l29a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l28b(unsigned long path, int depth) {
    unsigned long r = depth <= 29 ? leaf(path) : (((path >> 29) & 1) ? l29b : l29a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l27a(unsigned long path, int depth) {
    unsigned long r = depth <= 28 ? leaf(path) : (((path >> 28) & 1) ? l28b : l28a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l27b(unsigned long path, int depth) {
    unsigned long r = depth <= 28 ? leaf(path) : (((path >> 28) & 1) ? l28b : l28a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l26a(unsigned long path, int depth) {
    unsigned long r = depth <= 27 ? leaf(path) : (((path >> 27) & 1) ? l27b : l27a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l26b(unsigned long path, int depth) {
    unsigned long r = depth <= 27 ? leaf(path) : (((path >> 27) & 1) ? l27b : l27a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l25a(unsigned long path, int depth) {
    unsigned long r = depth <= 26 ? leaf(path) : (((path >> 26) & 1) ? l26b : l26a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l25b(unsigned long path, int depth) {
    unsigned long r = depth <= 26 ? leaf(path) : (((path >> 26) & 1) ? l26b : l26a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l24a(unsigned long path, int depth) {
    unsigned long r = depth <= 25 ? leaf(path) : (((path >> 25) & 1) ? l25b : l25a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l24b(unsigned long path, int depth) {
    unsigned long r = depth <= 25 ? leaf(path) : (((path >> 25) & 1) ? l25b : l25a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l23a(unsigned long path, int depth) {
    unsigned long r = depth <= 24 ? leaf(path) : (((path >> 24) & 1) ? l24b : l24a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l23b(unsigned long path, int depth) {
    unsigned long r = depth <= 24 ? leaf(path) : (((path >> 24) & 1) ? l24b : l24a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l22a(unsigned long path, int depth) {
    unsigned long r = depth <= 23 ? leaf(path) : (((path >> 23) & 1) ? l23b : l23a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l22b(unsigned long path, int depth) {
    unsigned long r = depth <= 23 ? leaf(path) : (((path >> 23) & 1) ? l23b : l23a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l21a(unsigned long path, int depth) {
    unsigned long r = depth <= 22 ? leaf(path) : (((path >> 22) & 1) ? l22b : l22a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l21b(unsigned long path, int depth) {
    unsigned long r = depth <= 22 ? leaf(path) : (((path >> 22) & 1) ? l22b : l22a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l20a(unsigned long path, int depth) {
    unsigned long r = depth <= 21 ? leaf(path) : (((path >> 21) & 1) ? l21b : l21a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l20b(unsigned long path, int depth) {
    unsigned long r = depth <= 21 ? leaf(path) : (((path >> 21) & 1) ? l21b : l21a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l19a(unsigned long path, int depth) {
    unsigned long r = depth <= 20 ? leaf(path) : (((path >> 20) & 1) ? l20b : l20a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l19b(unsigned long path, int depth) {
    unsigned long r = depth <= 20 ? leaf(path) : (((path >> 20) & 1) ? l20b : l20a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l18a(unsigned long path, int depth) {
    unsigned long r = depth <= 19 ? leaf(path) : (((path >> 19) & 1) ? l19b : l19a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l18b(unsigned long path, int depth) {
    unsigned long r = depth <= 19 ? leaf(path) : (((path >> 19) & 1) ? l19b : l19a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l17a(unsigned long path, int depth) {
    unsigned long r = depth <= 18 ? leaf(path) : (((path >> 18) & 1) ? l18b : l18a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l17b(unsigned long path, int depth) {
    unsigned long r = depth <= 18 ? leaf(path) : (((path >> 18) & 1) ? l18b : l18a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l16a(unsigned long path, int depth) {
    unsigned long r = depth <= 17 ? leaf(path) : (((path >> 17) & 1) ? l17b : l17a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l16b(unsigned long path, int depth) {
    unsigned long r = depth <= 17 ? leaf(path) : (((path >> 17) & 1) ? l17b : l17a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l15a(unsigned long path, int depth) {
    unsigned long r = depth <= 16 ? leaf(path) : (((path >> 16) & 1) ? l16b : l16a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l15b(unsigned long path, int depth) {
    unsigned long r = depth <= 16 ? leaf(path) : (((path >> 16) & 1) ? l16b : l16a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l14a(unsigned long path, int depth) {
    unsigned long r = depth <= 15 ? leaf(path) : (((path >> 15) & 1) ? l15b : l15a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l14b(unsigned long path, int depth) {
    unsigned long r = depth <= 15 ? leaf(path) : (((path >> 15) & 1) ? l15b : l15a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l13a(unsigned long path, int depth) {
    unsigned long r = depth <= 14 ? leaf(path) : (((path >> 14) & 1) ? l14b : l14a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l13b(unsigned long path, int depth) {
    unsigned long r = depth <= 14 ? leaf(path) : (((path >> 14) & 1) ? l14b : l14a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l12a(unsigned long path, int depth) {
    unsigned long r = depth <= 13 ? leaf(path) : (((path >> 13) & 1) ? l13b : l13a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l12b(unsigned long path, int depth) {
    unsigned long r = depth <= 13 ? leaf(path) : (((path >> 13) & 1) ? l13b : l13a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l11a(unsigned long path, int depth) {
    unsigned long r = depth <= 12 ? leaf(path) : (((path >> 12) & 1) ? l12b : l12a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l11b(unsigned long path, int depth) {
    unsigned long r = depth <= 12 ? leaf(path) : (((path >> 12) & 1) ? l12b : l12a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l10a(unsigned long path, int depth) {
    unsigned long r = depth <= 11 ? leaf(path) : (((path >> 11) & 1) ? l11b : l11a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l10b(unsigned long path, int depth) {
    unsigned long r = depth <= 11 ? leaf(path) : (((path >> 11) & 1) ? l11b : l11a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l9a(unsigned long path, int depth) {
    unsigned long r = depth <= 10 ? leaf(path) : (((path >> 10) & 1) ? l10b : l10a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l9b(unsigned long path, int depth) {
    unsigned long r = depth <= 10 ? leaf(path) : (((path >> 10) & 1) ? l10b : l10a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l8a(unsigned long path, int depth) {
    unsigned long r = depth <= 9 ? leaf(path) : (((path >> 9) & 1) ? l9b : l9a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l8b(unsigned long path, int depth) {
    unsigned long r = depth <= 9 ? leaf(path) : (((path >> 9) & 1) ? l9b : l9a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l7a(unsigned long path, int depth) {
    unsigned long r = depth <= 8 ? leaf(path) : (((path >> 8) & 1) ? l8b : l8a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l7b(unsigned long path, int depth) {
    unsigned long r = depth <= 8 ? leaf(path) : (((path >> 8) & 1) ? l8b : l8a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l6a(unsigned long path, int depth) {
    unsigned long r = depth <= 7 ? leaf(path) : (((path >> 7) & 1) ? l7b : l7a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l6b(unsigned long path, int depth) {
    unsigned long r = depth <= 7 ? leaf(path) : (((path >> 7) & 1) ? l7b : l7a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l5a(unsigned long path, int depth) {
    unsigned long r = depth <= 6 ? leaf(path) : (((path >> 6) & 1) ? l6b : l6a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l5b(unsigned long path, int depth) {
    unsigned long r = depth <= 6 ? leaf(path) : (((path >> 6) & 1) ? l6b : l6a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l4a(unsigned long path, int depth) {
    unsigned long r = depth <= 5 ? leaf(path) : (((path >> 5) & 1) ? l5b : l5a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l4b(unsigned long path, int depth) {
    unsigned long r = depth <= 5 ? leaf(path) : (((path >> 5) & 1) ? l5b : l5a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l3a(unsigned long path, int depth) {
    unsigned long r = depth <= 4 ? leaf(path) : (((path >> 4) & 1) ? l4b : l4a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l3b(unsigned long path, int depth) {
    unsigned long r = depth <= 4 ? leaf(path) : (((path >> 4) & 1) ? l4b : l4a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l2a(unsigned long path, int depth) {
    unsigned long r = depth <= 3 ? leaf(path) : (((path >> 3) & 1) ? l3b : l3a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l2b(unsigned long path, int depth) {
    unsigned long r = depth <= 3 ? leaf(path) : (((path >> 3) & 1) ? l3b : l3a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l1a(unsigned long path, int depth) {
    unsigned long r = depth <= 2 ? leaf(path) : (((path >> 2) & 1) ? l2b : l2a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l1b(unsigned long path, int depth) {
    unsigned long r = depth <= 2 ? leaf(path) : (((path >> 2) & 1) ? l2b : l2a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}
NOINLINE unsigned long l0a(unsigned long path, int depth) {
    unsigned long r = depth <= 1 ? leaf(path) : (((path >> 1) & 1) ? l1b : l1a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 97;
}
NOINLINE unsigned long l0b(unsigned long path, int depth) {
    unsigned long r = depth <= 1 ? leaf(path) : (((path >> 1) & 1) ? l1b : l1a)(path, depth);
    __asm__ volatile("" ::: "memory");
    return r + 98;
}

/* CPU time (user + sys, all threads) of process `pid` from /proc, in ns; -1 if unknown
 * (as in hammer.c: 10 ms resolution). */
static long long proc_cpu_ns(long pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    unsigned long long utime, stime;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &utime, &stime) != 2)
        return -1;
    return (long long)(utime + stime) * (1000000000LL / sysconf(_SC_CLK_TCK));
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    struct timespec a, b;
    unsigned long acc = 0;
    const char *tp = getenv("BENCH_TRACER_PID");
    long tracer = tp ? strtol(tp, NULL, 10) : (long)getppid();
    long long c0 = proc_cpu_ns(tracer);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        unsigned long path = (unsigned long)i;
        int depth = 1 + (int)(i % 40);
        acc += ((path & 1) ? l0b : l0a)(path, depth);
        __asm__ volatile("" ::: "memory");
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long c1 = proc_cpu_ns(tracer);
    long long ns = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    struct rusage ru;
    long long cpu_ns = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu_ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                 (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    printf("elapsed_ns=%lld calls=%ld ns_per_call=%.1f acc=%lu cpu_ns=%lld tracer_cpu_ns=%lld\n",
           ns, n, (double)ns / n, acc, cpu_ns, c0 >= 0 && c1 >= 0 ? c1 - c0 : -1);
    return 0;
}
