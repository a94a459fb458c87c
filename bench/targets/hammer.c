/* The benchmark workload: main -> run -> step -> hot(int), N times, timing only its own loop.
 *
 * Usage: hammer N [LINGER_MS]
 * Prints `elapsed_ns=<loop time> calls=<N> sink=<checksum> cpu_ns=<own CPU time>
 * tracer_cpu_ns=<CPU time the tracer (parent, or $BENCH_TRACER_PID) used during the loop>`:
 * the tracer's reader competes with the target for the CPUs. LINGER_MS (default 0)
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
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

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

/* CPU time (user + sys, all threads) of process `pid` from /proc, in ns; -1 if unknown.
 * 10 ms resolution (USER_HZ), enough over a loop of seconds. */
static long long proc_cpu_ns(long pid)
{
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

	/* The tracer is our parent (urec/perf/bpftrace run the command), unless the harness names
	 * it (bcc tools run beside us). */
	const char *tp = getenv("BENCH_TRACER_PID");
	long tracer = tp ? strtol(tp, NULL, 10) : (long)getppid();
	long long c0 = proc_cpu_ns(tracer);

	long long t0 = now_ns();
	long acc = run(n);
	long long t1 = now_ns();
	long long c1 = proc_cpu_ns(tracer);
	struct rusage ru;
	long long cpu_ns = -1;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		cpu_ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
			 (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
	printf("elapsed_ns=%lld calls=%ld sink=%ld cpu_ns=%lld tracer_cpu_ns=%lld\n", t1 - t0, n, acc,
	       cpu_ns, c0 >= 0 && c1 >= 0 ? c1 - c0 : -1);
	fflush(stdout);
	if (linger_ms > 0) {
		struct timespec ts = { linger_ms / 1000, (linger_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	return 0;
}
