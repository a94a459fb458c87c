/* The benchmark workload: main -> run -> step -> hot(int), N times, timing only its own loop.
 *
 * Usage: hammer N [LINGER_MS]
 * Prints `elapsed_ns=<loop time> calls=<N> sink=<checksum>` on stdout. LINGER_MS (default 0)
 * keeps the process alive after the loop, so that a harness can read BPF program statistics
 * while a tracer is still attached.
 *
 * Built with -O1 -g -fno-omit-frame-pointer -fcf-protection=none (see bench/run): every
 * function keeps a frame, and `hot` begins with `push %rbp`, which the kernel emulates when a
 * uprobe hits it. An `endbr64` first (-fcf-protection) would be single-stepped instead, about
 * 35x dearer in a VM, and would measure the VM's #DB exits rather than the tracer.
 * Only the loop is timed (CLOCK_MONOTONIC), so a tracer's start-up, attach, detach and
 * post-processing are not part of ns/call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline, noclone))

/* Written by hot() so that the calls cannot be optimized away. */
volatile long sink;

NOINLINE int hot(int x)
{
	/* GCC 12 drops the frame of a leaf even with -mno-omit-leaf-frame-pointer; taking the
	 * frame address forces `push %rbp; mov %rsp,%rbp`. */
	void *volatile frame = __builtin_frame_address(0);
	(void)frame;
	sink += x;
	return x + 1;
}

NOINLINE int step(int x)
{
	int r = hot(x);
	__asm__ volatile("" ::: "memory");
	return r;
}

NOINLINE long run(long n)
{
	long acc = 0;
	for (long i = 0; i < n; i++) {
		acc += step((int)i);
		__asm__ volatile("" ::: "memory");
	}
	return acc;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s N [LINGER_MS]\n", argv[0]);
		return 2;
	}
	char *end;
	long n = strtol(argv[1], &end, 10);
	if (*end != '\0' || n < 0) {
		fprintf(stderr, "hammer: bad N %s\n", argv[1]);
		return 2;
	}
	long linger_ms = argc > 2 ? strtol(argv[2], NULL, 10) : 0;

	long long t0 = now_ns();
	long acc = run(n);
	long long t1 = now_ns();
	printf("elapsed_ns=%lld calls=%ld sink=%ld\n", t1 - t0, n, acc);
	fflush(stdout);
	if (linger_ms > 0) {
		struct timespec ts = { linger_ms / 1000, (linger_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	return 0;
}
