/* bpfscope httptrace: HTTP/1.x requests of any process, without changing it. Plain-text traffic is
 * seen at the syscalls that move socket data (read, recvfrom, readv, write, sendto, writev, close);
 * HTTPS at OpenSSL's SSL_read/SSL_write (and their _ex forms) through uprobes, where the data is
 * still plain text.
 *
 * Only heads leave the kernel: a buffer that starts with a request line ("GET ", "POST ", ...) or a
 * status line ("HTTP/1.") on a socket goes out with its first HEAD_BYTES bytes. Everything else
 * only adds to the byte counters of the connection it belongs to, so a busy server sends a few
 * hundred bytes per request through the ring, not its traffic. A connection is (tgid, fd) for
 * plain sockets and (tgid, SSL *) for TLS; its state starts at the first request head seen on it.
 *
 * One exchange on a connection: the request starts at its head; the response at the first status
 * line going the other way; the exchange ends at the next request head or at close (SSL_free for
 * TLS), when an END record carries its final byte counts. Request bytes are what moved in the
 * request's direction until the response started; response bytes what moved back until the end. */
#include "bpfscope.bpf.h"

#define HEAD_BYTES 256
#define S_IFMT 00170000
#define S_IFSOCK 0140000

enum event_kind {
	EVENT_REQUEST = 0,      /* a request head; bytes: this buffer's */
	EVENT_RESPONSE = 1,     /* a status line going back; latency and the request's final bytes */
	EVENT_END = 2,          /* the exchange ended (next request, close): final byte counts */
};

enum side {
	SIDE_SERVER = 0,        /* the process read the request */
	SIDE_CLIENT = 1,        /* the process wrote it */
};

enum io_dir {
	IO_IN = 0,
	IO_OUT = 1,
};

enum io_shape {
	SHAPE_FLAT = 0,            /* (fd, buf, len) */
	SHAPE_VECTOR = 1,          /* (fd, iov, iovcnt): the first iovec is looked at */
};

struct conn_key {
	__u64 ssl;              /* SSL * for TLS, 0 for a plain socket */
	__u32 tgid;
	__s32 fd;               /* -1 for TLS: the SSL * names the connection */
};

struct conn {
	__u64 sock;             /* struct sock *: tells a reused fd from the socket it named */
	__u64 request_ns;
	__u64 request_bytes;
	__u64 response_bytes;
	__s32 fd;               /* the socket, where known (for TLS: seen under SSL_read/SSL_write) */
	__u16 lport;            /* host byte order; 0 where unknown */
	__u16 rport;
	__u8 side;              /* enum side */
	__u8 responding;        /* the response has started */
	__u8 pad[6];
};

struct http_event {
	__u64 time_ns;          /* bpf_ktime_get_ns: a read's return, a write's call */
	__u64 ssl;
	__u64 latency_ns;       /* RESPONSE: since the request's first byte */
	__u64 request_bytes;    /* REQUEST: this buffer; RESPONSE, END: the whole request */
	__u64 response_bytes;   /* END: the whole response */
	__u32 tgid;
	__u32 pid;
	__s32 fd;
	__u32 len;              /* bytes this call moved */
	__u16 lport;
	__u16 rport;
	__u8 kind;              /* enum event_kind */
	__u8 side;              /* enum side */
	__u16 captured;         /* bytes of head[] filled */
	char comm[16];
	__u8 head[HEAD_BYTES];
};

/* A record's bytes in the ring: the 8-byte header, rounded up to 8. */
#define RECORD_SLOT ((sizeof(struct http_event) + 8 + 7) & ~7UL)

struct io_args {
	__u64 buf;
	__u64 start_ns;
	__s32 fd;
	__u8 op;
	__u8 shape;             /* enum io_shape */
	__u8 pad[2];
};

struct ssl_args {
	__u64 ssl;
	__u64 buf;
	__u64 count_ptr;        /* SSL_read_ex/SSL_write_ex: where the byte count goes; 0 otherwise */
	__u64 start_ns;
	__u8 op;
	__u8 pad[7];
};

struct ssl_fd_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

struct httptrace_counts {
	__u64 heads;            /* buffers that looked like an HTTP head */
	__u64 skipped;          /* ... and were not on a socket, or not on --port */
};

const volatile __u32 cfg_tgid = 0;      /* only this process; 0: every process */
const volatile __u16 cfg_port = 0;      /* only sockets with this local or remote port; 0: any */
const volatile bool cfg_tls = false;    /* the SSL uprobes are attached: map SSL * → fd */
/* Records are submitted without waking the reader, which polls on a timeout, except when the
 * ring's unread data crosses a multiple of this: one wakeup per that many bytes at any rate. */
const volatile __u64 cfg_wakeup_bytes = 1 << 17;

DEFINE_RINGBUF(events, struct http_event, 1 << 20);
BTF_EXPORT(enum event_kind, kind);
BTF_EXPORT(enum side, side);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn);
} conns SEC(".maps");

/* The arguments of a call in progress, by thread: a read's data is there only when it returns. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct io_args);
} pending_io SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ssl_args);
} pending_ssl SEC(".maps");

/* The socket under each SSL *: the fd of the last read or write its thread made inside an
 * SSL_read or SSL_write (OpenSSL's socket BIO does plain read() and write()). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_fd_key);
	__type(value, __s32);
} ssl_fds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct httptrace_counts);
} counts SEC(".maps");

static __always_inline struct httptrace_counts *counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counts, &zero);
}

static __always_inline bool traced(__u64 pid_tgid)
{
	return !cfg_tgid || (pid_tgid >> 32) == cfg_tgid;
}

/* Whether the little-endian word `w` (a buffer's first 8 bytes) starts with `s`. */
static __always_inline bool starts(__u64 w, const char *s, __u32 n)
{
	__u64 value = 0;

	for (__u32 i = 0; i < 8; i++)
		if (i < n)
			value |= (__u64)(__u8)s[i] << (8 * i);
	return (w & (n >= 8 ? ~0ULL : (1ULL << (8 * n)) - 1)) == value;
}

#define STARTS(w, s) starts(w, s, sizeof(s) - 1)

enum head_kind {
	HEAD_NONE = 0,
	HEAD_REQUEST = 1,
	HEAD_STATUS = 2,
};

static __always_inline enum head_kind classify(__u64 w)
{
	if (STARTS(w, "HTTP/1."))
		return HEAD_STATUS;
	if (STARTS(w, "GET ") || STARTS(w, "POST ") || STARTS(w, "PUT ") || STARTS(w, "HEAD ") ||
	    STARTS(w, "DELETE ") || STARTS(w, "PATCH ") || STARTS(w, "OPTIONS "))
		return HEAD_REQUEST;
	return HEAD_NONE;
}

/* The struct sock and ports of socket `fd` of the current process; false when fd is no socket. Read through the
 * task's fd table with CO-RE: a tracepoint has no struct sock of its own. */
static __always_inline bool socket_ports(__s32 fd, __u16 *lport, __u16 *rport, __u64 *sock_ptr)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;
	umode_t mode;

	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return false;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return false;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return false;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return false;
	*sock_ptr = (__u64)sk;
	*lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return true;
}

static __always_inline void emit(enum event_kind kind, struct conn_key *key, struct conn *c, __u64 time_ns,
				 __u64 buf, __u32 len, __u32 head_len)
{
	struct http_event *e = RINGBUF_RESERVE(events);
	__u32 captured = head_len < HEAD_BYTES ? head_len : HEAD_BYTES;
	__u64 avail;

	if (!e)
		return;
	e->time_ns = time_ns;
	e->ssl = key->ssl;
	e->latency_ns = kind == EVENT_RESPONSE ? time_ns - c->request_ns : 0;
	e->request_bytes = c->request_bytes;
	e->response_bytes = c->response_bytes;
	e->tgid = key->tgid;
	e->pid = (__u32)bpf_get_current_pid_tgid();
	e->fd = c->fd;
	e->len = len;
	e->lport = c->lport;
	e->rport = c->rport;
	e->kind = kind;
	e->side = c->side;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* Two reads, each with a size the verifier can bound. */
	if (kind == EVENT_END)
		captured = 0;
	else if (captured == HEAD_BYTES ? bpf_probe_read_user(e->head, HEAD_BYTES, (void *)buf) :
		 bpf_probe_read_user(e->head, captured & (HEAD_BYTES - 1), (void *)buf))
		captured = 0;
	e->captured = captured;
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, avail / cfg_wakeup_bytes != (avail - RECORD_SLOT) / cfg_wakeup_bytes ?
			   BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* One buffer `len` bytes long moved by `op` on connection `key`; its first `head_len` bytes are at
 * `buf` (less than len for a vector: its first iovec). `fd` is the socket, -1 where unknown;
 * `plain`: the fd must be a socket (a syscall), else the caller vouches (OpenSSL). */
static __always_inline void on_data(struct conn_key *key, __u8 op, __u64 buf, __u32 len, __u32 head_len,
				    __u64 time_ns, __s32 fd, bool plain)
{
	struct conn *c = bpf_map_lookup_elem(&conns, key);
	struct httptrace_counts *n;
	enum head_kind head = HEAD_NONE;
	__u64 word = 0;

	if (head_len >= 8 && !bpf_probe_read_user(&word, sizeof(word), (void *)buf))
		head = classify(word);

	if (head == HEAD_REQUEST) {
		struct conn fresh = {};
		bool is_socket = false;

		n = counters();
		if (n)
			n->heads += 1;
		if (fd >= 0)
			is_socket = socket_ports(fd, &fresh.lport, &fresh.rport, &fresh.sock);
		/* The fd now names another socket (or none): its close went unseen (exit, dup2). */
		if (c && plain && fresh.sock != c->sock) {
			emit(EVENT_END, key, c, time_ns, 0, 0, 0);
			bpf_map_delete_elem(&conns, key);
			c = NULL;
		}
		if (c && op != (c->side == SIDE_SERVER ? IO_IN : IO_OUT))
			goto data;      /* a body going back that happens to start like a request */
		if (c) {
			emit(EVENT_END, key, c, time_ns, 0, 0, 0);
			fresh.lport = c->lport;
			fresh.rport = c->rport;
			fresh.sock = c->sock;
			fresh.fd = c->fd;
		} else {
			fresh.fd = fd;
			if ((plain && !is_socket) ||
			    (cfg_port && fresh.lport != cfg_port && fresh.rport != cfg_port)) {
				if (n)
					n->skipped += 1;
				return;
			}
		}
		fresh.side = op == IO_IN ? SIDE_SERVER : SIDE_CLIENT;
		fresh.request_ns = time_ns;
		fresh.request_bytes = len;
		bpf_map_update_elem(&conns, key, &fresh, BPF_ANY);
		emit(EVENT_REQUEST, key, &fresh, time_ns, buf, len, head_len);
		return;
	}
data:
	if (!c)
		return;
	if (op == (c->side == SIDE_SERVER ? IO_OUT : IO_IN)) {
		if (head == HEAD_STATUS && !c->responding) {
			c->responding = 1;
			c->response_bytes = len;
			emit(EVENT_RESPONSE, key, c, time_ns, buf, len, head_len);
		} else if (c->responding) {
			c->response_bytes += len;
			/* A final status after a 1xx: Python keeps the last one. */
			if (head == HEAD_STATUS)
				emit(EVENT_RESPONSE, key, c, time_ns, buf, len, head_len);
		}
	} else if (!c->responding) {
		c->request_bytes += len;
	}
}

static __always_inline void end_conn(struct conn_key *key)
{
	struct conn *c = bpf_map_lookup_elem(&conns, key);

	if (!c)
		return;
	emit(EVENT_END, key, c, bpf_ktime_get_ns(), 0, 0, 0);
	bpf_map_delete_elem(&conns, key);
}

/* --- syscalls ---------------------------------------------------------------------------------- */

static __always_inline void enter_io(long fd, __u64 buf, __u8 op, __u8 shape)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io_args args = {};

	if (!traced(id) || fd < 0)
		return;
	if (cfg_tls) {
		struct ssl_args *ssl = bpf_map_lookup_elem(&pending_ssl, &id);

		if (ssl) {
			/* OpenSSL's own socket I/O: ciphertext, but it names the SSL *'s socket. */
			struct ssl_fd_key key = { .ssl = ssl->ssl, .tgid = id >> 32 };
			__s32 sfd = fd;

			bpf_map_update_elem(&ssl_fds, &key, &sfd, BPF_ANY);
			return;
		}
	}
	args.buf = buf;
	args.start_ns = bpf_ktime_get_ns();
	args.fd = fd;
	args.op = op;
	args.shape = shape;
	bpf_map_update_elem(&pending_io, &id, &args, BPF_ANY);
}

static __always_inline void exit_io(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io_args *pending = bpf_map_lookup_elem(&pending_io, &id);
	struct io_args args;
	struct conn_key key = {};
	__u64 buf, head_len = ret;

	if (!pending)
		return;
	args = *pending;
	bpf_map_delete_elem(&pending_io, &id);
	if (ret <= 0)
		return;
	buf = args.buf;
	if (args.shape == SHAPE_VECTOR) {
		struct iovec first;

		if (bpf_probe_read_user(&first, sizeof(first), (void *)buf))
			return;
		buf = (__u64)first.iov_base;
		if (first.iov_len < head_len)
			head_len = first.iov_len;
	}
	key.tgid = id >> 32;
	key.fd = args.fd;
	/* A read's data arrived when it returned; a write's left when it was called. */
	on_data(&key, args.op, buf, ret, head_len, args.op == IO_IN ? bpf_ktime_get_ns() : args.start_ns,
		args.fd, true);
}

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_IN, SHAPE_FLAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_IN, SHAPE_FLAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_IN, SHAPE_VECTOR);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_OUT, SHAPE_FLAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_OUT, SHAPE_FLAT);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	enter_io(ctx->args[0], ctx->args[1], IO_OUT, SHAPE_VECTOR);
	return 0;
}

/* One program for every exit: each only looks up what its thread's enter left. */
SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct trace_event_raw_sys_exit *ctx)
{
	exit_io(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key key = {};

	if (!traced(id))
		return 0;
	key.tgid = id >> 32;
	key.fd = ctx->args[0];
	end_conn(&key);
	return 0;
}

/* --- OpenSSL ----------------------------------------------------------------------------------- */

static __always_inline void enter_ssl(void *ssl, void *buf, void *count_ptr, __u8 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_args args = {};

	if (!traced(id))
		return;
	args.ssl = (__u64)ssl;
	args.buf = (__u64)buf;
	args.count_ptr = (__u64)count_ptr;
	args.start_ns = bpf_ktime_get_ns();
	args.op = op;
	bpf_map_update_elem(&pending_ssl, &id, &args, BPF_ANY);
}

static __always_inline void exit_ssl(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_args *pending = bpf_map_lookup_elem(&pending_ssl, &id);
	struct ssl_args args;
	struct ssl_fd_key fd_key = {};
	struct conn_key key = {};
	__s32 *fd;
	__u64 len = 0;

	if (!pending)
		return;
	args = *pending;
	bpf_map_delete_elem(&pending_ssl, &id);
	if (ret <= 0)
		return;
	if (args.count_ptr) {   /* the _ex forms return 1 and store the count */
		if (bpf_probe_read_user(&len, sizeof(len), (void *)args.count_ptr))
			return;
	} else {
		len = ret;
	}
	if (!len || len > 0xffffffff)
		return;
	fd_key.ssl = args.ssl;
	fd_key.tgid = id >> 32;
	fd = bpf_map_lookup_elem(&ssl_fds, &fd_key);
	key.ssl = args.ssl;
	key.tgid = id >> 32;
	key.fd = -1;
	on_data(&key, args.op, args.buf, len, len, args.op == IO_IN ? bpf_ktime_get_ns() : args.start_ns,
		fd ? *fd : -1, false);
}

SEC("uprobe")
int BPF_KPROBE(enter_ssl_read, void *ssl, void *buf)
{
	enter_ssl(ssl, buf, NULL, IO_IN);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(enter_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	enter_ssl(ssl, buf, readbytes, IO_IN);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(enter_ssl_write, void *ssl, void *buf)
{
	enter_ssl(ssl, buf, NULL, IO_OUT);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(enter_ssl_write_ex, void *ssl, void *buf, __u64 num, void *written)
{
	enter_ssl(ssl, buf, written, IO_OUT);
	return 0;
}

/* One return probe for all four: the entry probe left what the return needs. */
SEC("uretprobe")
int BPF_KRETPROBE(exit_ssl_io, int ret)
{
	exit_ssl(ret);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(enter_ssl_free, void *ssl)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_fd_key fd_key = {};
	struct conn_key key = {};

	if (!traced(id))
		return 0;
	key.ssl = (__u64)ssl;
	key.tgid = id >> 32;
	key.fd = -1;
	end_conn(&key);
	fd_key.ssl = (__u64)ssl;
	fd_key.tgid = id >> 32;
	bpf_map_delete_elem(&ssl_fds, &fd_key);
	return 0;
}
