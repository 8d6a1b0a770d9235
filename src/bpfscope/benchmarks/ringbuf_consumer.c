/* The reference consumer for benchmarks/ringbuf.py: libbpf's own reader (a callback per record) on
 * the very ring map the benchmark fills, opened from its bpffs pin. For each line on stdin it
 * drains the ring once and prints "<records> <nanoseconds>". ring_buffer__consume is
 * ring_buffer__poll's record loop without its epoll_wait, which never fires here: the benchmark's
 * producer submits with BPF_RB_NO_WAKEUP, so the ring's fd is never put on epoll's ready list.
 * Built at bench time: cc -O2 ringbuf_consumer.c -lbpf */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int count_record(void *ctx, void *data, size_t size)
{
	(void)data;
	(void)size;
	(*(uint64_t *)ctx)++;
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct ring_buffer *ring;
	uint64_t count = 0;
	char line[64];
	int fd, ret = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s PINNED_RING_MAP\n", argv[0]);
		return 2;
	}
	fd = bpf_obj_get(argv[1]);
	if (fd < 0) {
		fprintf(stderr, "bpf_obj_get %s: %s\n", argv[1], strerror(-fd));
		return 1;
	}
	ring = ring_buffer__new(fd, count_record, &count, NULL);
	if (!ring) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		close(fd);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		uint64_t start, end;
		int got;

		count = 0;
		start = now_ns();
		got = ring_buffer__consume(ring);
		end = now_ns();
		if (got < 0) {
			fprintf(stderr, "ring_buffer__consume: %s\n", strerror(-got));
			ret = 1;
			break;
		}
		printf("%llu %llu\n", (unsigned long long)count, (unsigned long long)(end - start));
		fflush(stdout);
	}
	ring_buffer__free(ring);
	close(fd);
	return ret;
}
