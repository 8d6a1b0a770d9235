/* The workload of benchmarks/opensnoop.py: a tight openat + close loop. It prints its pid and waits
 * for a line on stdin, so a tracer can attach filtered to that pid first; then it opens and closes
 * `path` `count` times and prints "<opens> <failed> <nanoseconds>". Every line on stdin runs the loop
 * once more; end of input ends it. Built at bench time: cc -O2 openloop.c */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char line[64];
	long count;

	if (argc != 3 || (count = atol(argv[2])) <= 0) {
		fprintf(stderr, "usage: %s PATH COUNT\n", argv[0]);
		return 2;
	}
	printf("%d\n", (int)getpid());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long start, end;
		long failed = 0;

		start = now_ns();
		for (long i = 0; i < count; i++) {
			int fd = openat(AT_FDCWD, argv[1], O_RDONLY);

			if (fd < 0)
				failed++;
			else
				close(fd);
		}
		end = now_ns();
		printf("%ld %ld %llu\n", count, failed, end - start);
		fflush(stdout);
	}
	return 0;
}
