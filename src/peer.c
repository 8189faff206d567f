/*-------------------------------------------------------------------------
 *
 * peer.c
 *	  Which process is on the other end of a client's socket (see peer.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dirent.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peer.h"

int
tunnel_peer_unix_pid(int sock)
{
	struct ucred cred;
	socklen_t	len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
		cred.uid != geteuid())
		return 0;
	return (int) cred.pid;
}

/*
 * An address and port as /proc/net/tcp{,6} writes them: the address's
 * 32-bit words in host order, in hex, then the port in hex.
 */
static void
proc_net_key(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	if (ss->ss_family == AF_INET)
	{
		const struct sockaddr_in *in = (const struct sockaddr_in *) ss;

		snprintf(buf, len, "%08X:%04X", (unsigned) in->sin_addr.s_addr,
				 (unsigned) ntohs(in->sin_port));
	}
	else if (ss->ss_family == AF_INET6)
	{
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) ss;
		uint32		w[4];

		memcpy(w, &in6->sin6_addr, sizeof(w));
		snprintf(buf, len, "%08X%08X%08X%08X:%04X", (unsigned) w[0],
				 (unsigned) w[1], (unsigned) w[2], (unsigned) w[3],
				 (unsigned) ntohs(in6->sin6_port));
	}
	else
		buf[0] = '\0';
}

/*
 * The inode of the client's socket of each query, from /proc/net/tcp{,6}:
 * the line whose local address is the client's and remote the worker's,
 * owned by our OS user (0 when none).
 */
static void
find_inodes(TunnelPeerQuery *q, int n, unsigned long *inodes)
{
	char		(*client_keys)[48] = palloc(n * sizeof(*client_keys));
	char		(*server_keys)[48] = palloc(n * sizeof(*server_keys));
	static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	uid_t		me = geteuid();

	for (int i = 0; i < n; i++)
	{
		proc_net_key(&q[i].client, client_keys[i], sizeof(client_keys[i]));
		proc_net_key(&q[i].server, server_keys[i], sizeof(server_keys[i]));
		inodes[i] = 0;
	}
	for (int f = 0; f < lengthof(files); f++)
	{
		FILE	   *file = fopen(files[f], "r");
		char		line[512];

		if (file == NULL)
			continue;
		while (fgets(line, sizeof(line), file))
		{
			char		local[64];
			char		remote[64];
			unsigned	uid;
			unsigned long inode;

			/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
			if (sscanf(line, " %*d: %63s %63s %*x %*s %*s %*s %u %*d %lu",
					   local, remote, &uid, &inode) != 4)
				continue;
			if (uid != me)
				continue;
			for (int i = 0; i < n; i++)
				if (inodes[i] == 0 && strcmp(local, client_keys[i]) == 0 &&
					strcmp(remote, server_keys[i]) == 0)
					inodes[i] = inode;
		}
		fclose(file);
	}
	pfree(client_keys);
	pfree(server_keys);
}

void
tunnel_peer_find_pids(TunnelPeerQuery *q, int n)
{
	unsigned long *inodes;
	int			left = 0;
	DIR		   *proc;
	struct dirent *de;
	uid_t		me = geteuid();

	for (int i = 0; i < n; i++)
		q[i].pid = 0;
	if (n == 0)
		return;
	inodes = palloc(n * sizeof(unsigned long));
	find_inodes(q, n, inodes);
	for (int i = 0; i < n; i++)
		if (inodes[i] != 0)
			left++;

	proc = left > 0 ? opendir("/proc") : NULL;
	while (proc != NULL && left > 0 && (de = readdir(proc)) != NULL)
	{
		char		path[64];
		struct stat st;
		DIR		   *fds;
		struct dirent *fd;
		int			pid = atoi(de->d_name);

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd", pid);
		if (stat(path, &st) != 0 || st.st_uid != me ||
			(fds = opendir(path)) == NULL)
			continue;
		while (left > 0 && (fd = readdir(fds)) != NULL)
		{
			char		link[64];
			char		target[64];
			ssize_t		len;
			unsigned long inode;

			if (fd->d_name[0] == '.')
				continue;
			snprintf(link, sizeof(link), "/proc/%d/fd/%s", pid, fd->d_name);
			len = readlink(link, target, sizeof(target) - 1);
			if (len <= 0)
				continue;
			target[len] = '\0';
			if (sscanf(target, "socket:[%lu]", &inode) != 1)
				continue;
			for (int i = 0; i < n; i++)
				if (inodes[i] == inode && q[i].pid == 0)
				{
					q[i].pid = pid;
					left--;
				}
		}
		closedir(fds);
	}
	if (proc)
		closedir(proc);
	pfree(inodes);
}
