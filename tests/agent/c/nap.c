/* Calls nap() `count` times, each sleeping `us` microseconds, and prints how long each call took
 * (ns, CLOCK_MONOTONIC, measured inside): a function of known latency. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

__attribute__((noinline)) long long nap(long us)
{
	struct timespec t = { us / 1000000, (us % 1000000) * 1000 };
	long long start = now_ns();

	while (nanosleep(&t, &t))
		;
	return now_ns() - start;
}

int main(int argc, char **argv)
{
	long us = atol(argv[1]), count = atol(argv[2]);

	for (long i = 0; i < count; i++)
		printf("%lld\n", nap(us));
	return 0;
}
