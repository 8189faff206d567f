/*
 * latency_relay: a TCP relay on loopback that holds every chunk it forwards
 * for a fixed time, to measure forwarders over a path with a round-trip time
 * (this kernel has no netem).  Both directions are delayed, so the added
 * round-trip time is twice the delay.  Bytes keep their order.
 *
 *	 latency_relay LISTEN_PORT TARGET_PORT DELAY_MS
 *
 * Listens on 127.0.0.1:LISTEN_PORT and connects each client to
 * 127.0.0.1:TARGET_PORT.  Runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAIRS	64
#define CHUNK		65536

typedef struct Chunk
{
	struct Chunk *next;
	long long	due_us;
	size_t		len;
	size_t		off;
	char		data[];
} Chunk;

typedef struct Flow
{
	int			from;
	int			to;
	Chunk	   *head;
	Chunk	   *tail;
	size_t		queued;
	int			eof;			/* from said EOF; shut "to" once drained */
} Flow;

typedef struct Pair
{
	int			used;
	Flow		dir[2];
} Pair;

static Pair pairs[MAX_PAIRS];
static long long delay_us;

static long long
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
nodelay(int fd)
{
	int			one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void
close_pair(Pair *p)
{
	for (int d = 0; d < 2; d++)
	{
		Chunk	   *c = p->dir[d].head;

		while (c)
		{
			Chunk	   *n = c->next;

			free(c);
			c = n;
		}
	}
	close(p->dir[0].from);
	close(p->dir[0].to);
	memset(p, 0, sizeof(*p));
}

/* Read what "from" has into a new chunk due after the delay. */
static int
pull(Flow *f)
{
	Chunk	   *c = malloc(sizeof(Chunk) + CHUNK);
	ssize_t		n;

	if (c == NULL)
		return -1;
	n = recv(f->from, c->data, CHUNK, 0);
	if (n <= 0)
	{
		free(c);
		if (n == 0)
			f->eof = 1;
		return n == 0 ? 0 : -1;
	}
	c->next = NULL;
	c->due_us = now_us() + delay_us;
	c->len = n;
	c->off = 0;
	if (f->tail)
		f->tail->next = c;
	else
		f->head = c;
	f->tail = c;
	f->queued += n;
	return 0;
}

/* Write the chunks whose time has come. */
static int
push(Flow *f)
{
	long long	now = now_us();

	while (f->head && f->head->due_us <= now)
	{
		Chunk	   *c = f->head;
		ssize_t		n = send(f->to, c->data + c->off, c->len - c->off,
							 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->off += n;
		f->queued -= n;
		if (c->off < c->len)
			return 0;
		f->head = c->next;
		if (f->head == NULL)
			f->tail = NULL;
		free(c);
	}
	if (f->head == NULL && f->eof == 1)
	{
		shutdown(f->to, SHUT_WR);
		f->eof = 2;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in addr;
	int			lfd,
				one = 1,
				target;

	if (argc != 4)
	{
		fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT DELAY_MS\n", argv[0]);
		return 2;
	}
	target = atoi(argv[2]);
	delay_us = atoll(argv[3]) * 1000;
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons(atoi(argv[1]));
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
		listen(lfd, 64) < 0)
	{
		perror("latency_relay: listen");
		return 1;
	}

	for (;;)
	{
		struct pollfd pfd[1 + 2 * MAX_PAIRS];
		int			map[1 + 2 * MAX_PAIRS];
		int			n = 0,
					timeout = -1;
		long long	now = now_us();

		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		map[n++] = -1;
		for (int i = 0; i < MAX_PAIRS; i++)
		{
			if (!pairs[i].used)
				continue;
			for (int d = 0; d < 2; d++)
			{
				Flow	   *f = &pairs[i].dir[d];

				Flow	   *back = &pairs[i].dir[1 - d];

				pfd[n].fd = f->from;
				/* Bound what waits in the relay, as a link's queue would. */
				pfd[n].events = (!f->eof && f->queued < 8 * 1024 * 1024) ? POLLIN : 0;
				/* f->from is where the other direction writes. */
				if (back->head && back->head->due_us <= now)
					pfd[n].events |= POLLOUT;
				map[n++] = i * 2 + d;
				if (f->head && f->head->due_us > now)
				{
					long long	wait = (f->head->due_us - now + 999) / 1000;

					if (wait < 0)
						wait = 0;
					if (timeout < 0 || wait < timeout)
						timeout = (int) wait;
				}
			}
		}
		if (poll(pfd, n, timeout) < 0 && errno != EINTR)
			return 1;

		if (pfd[0].revents & POLLIN)
		{
			int			c = accept(lfd, NULL, NULL);

			if (c >= 0)
			{
				int			s = socket(AF_INET, SOCK_STREAM, 0);
				struct sockaddr_in t = addr;
				int			slot = -1;

				t.sin_port = htons(target);
				for (int i = 0; i < MAX_PAIRS && slot < 0; i++)
					if (!pairs[i].used)
						slot = i;
				if (slot < 0 || connect(s, (struct sockaddr *) &t, sizeof(t)) < 0)
				{
					close(c);
					close(s);
				}
				else
				{
					nodelay(c);
					nodelay(s);
					pairs[slot].used = 1;
					pairs[slot].dir[0].from = c;
					pairs[slot].dir[0].to = s;
					pairs[slot].dir[1].from = s;
					pairs[slot].dir[1].to = c;
				}
			}
		}
		for (int k = 1; k < n; k++)
		{
			Pair	   *p = &pairs[map[k] / 2];
			Flow	   *f = &p->dir[map[k] % 2];

			if (!p->used)
				continue;
			if ((pfd[k].revents & (POLLIN | POLLHUP | POLLERR)) && !f->eof &&
				pull(f) < 0)
				close_pair(p);
		}
		for (int i = 0; i < MAX_PAIRS; i++)
		{
			if (!pairs[i].used)
				continue;
			if (push(&pairs[i].dir[0]) < 0 || push(&pairs[i].dir[1]) < 0 ||
				(pairs[i].dir[0].eof == 2 && pairs[i].dir[1].eof == 2))
				close_pair(&pairs[i]);
		}
	}
}
