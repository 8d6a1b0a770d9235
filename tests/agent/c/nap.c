/* Calls nap() `count` times, each sleeping `us` microseconds: a function of known latency. */
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) void nap(long us)
{
	struct timespec t = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&t, NULL);
}

int main(int argc, char **argv)
{
	long us = atol(argv[1]), count = atol(argv[2]);

	for (long i = 0; i < count; i++)
		nap(us);
	return 0;
}
