/* Writes an HTTP request head into one end of a socketpair and reads it from the other, n times. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static const char head[] = "GET /burst HTTP/1.1\r\nHost: x\r\n\r\n";
	long n = argc > 1 ? atol(argv[1]) : 1;
	char buf[256];
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 1;
	if (getchar() == EOF)   /* go */
		return 1;
	for (long i = 0; i < n; i++)
		if (write(sv[0], head, sizeof(head) - 1) < 0 || read(sv[1], buf, sizeof(buf)) < 0)
			return 1;
	printf("done\n");
	return 0;
}
