/*-------------------------------------------------------------------------
 *
 * forwards.c
 *	  The worker's side of a tunnel's forwards: the listeners of each local
 *	  port (TCP on tunnel_ssh.listen_address, a Unix socket in
 *	  tunnel_ssh.socket_directory), their status slots, and the socket
 *	  directory, checked, refused or published for all tunnels at once.
 *
 * Moved out of worker.c, which runs the tunnels; see forwards.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "forwards.h"
#include "listener.h"
#include "settings.h"

typedef struct TunnelForward
{
	TunnelForwards *owner;
	int			local_port;
	char		remote_host[TUNNEL_HOST_MAXLEN + 1];
	int			remote_port;
	TunnelListener *listener;	/* NULL while the port cannot be bound */
	TunnelListener *unix_listener;	/* in socket_dir, or NULL */
	char		bind_error[TUNNEL_ERROR_MAXLEN];
	char		unix_error[TUNNEL_ERROR_MAXLEN];	/* last one logged */
	TunnelForwardSlot *slot;
} TunnelForward;

/*
 * tunnel_ssh.socket_directory, absolute, if set; else NULL.  Checked again
 * before each bind (listener_open_unix): it may be refused at any time.
 */
static char *socket_dir = NULL;
/* Why socket_dir was last refused, as logged once; "" while it is usable. */
static char socket_dir_refused[TUNNEL_ERROR_MAXLEN];

/* A listener's callback: the client goes to the tunnel's owner. */
static void
on_accept(void *arg, pgsocket client)
{
	TunnelForward *wf = (TunnelForward *) arg;

	wf->owner->accept(wf->owner->accept_arg, client, wf->remote_host,
					  wf->remote_port, wf->slot);
}

void
tunnel_forwards_init(TunnelForwards *fs, const char *name,
					 TunnelStatusSlot *slot, MemoryContext cxt,
					 TunnelForwardAccept accept, void *arg)
{
	memset(fs, 0, sizeof(*fs));
	strlcpy(fs->name, name, sizeof(fs->name));
	fs->slot = slot;
	fs->cxt = cxt;
	fs->accept = accept;
	fs->accept_arg = arg;
}

static void
close_forward_listeners(TunnelForward *wf)
{
	if (wf->listener)
		listener_close(wf->listener);
	if (wf->unix_listener)
		listener_close(wf->unix_listener);
	wf->listener = NULL;
	wf->unix_listener = NULL;
}

void
tunnel_forwards_close(TunnelForwards *fs)
{
	ListCell   *lc;

	foreach(lc, fs->list)
	{
		TunnelForward *wf = lfirst(lc);

		close_forward_listeners(wf);
		tunnel_status_forward_set_listening(wf->slot, false, NULL);
	}
}

void
tunnel_forwards_release(TunnelForwards *fs)
{
	ListCell   *lc;

	tunnel_forwards_close(fs);
	foreach(lc, fs->list)
		tunnel_status_forward_release(((TunnelForward *) lfirst(lc))->slot);
}

/*
 * Publish where clients find the tunnels (tunnel_status_connect_host()).
 * When that changes, a catalog reload follows, which points the foreign servers of
 * tunnel_server_create there (catalog_servers_follow_host).
 */
static void
publish_socket_dir(const char *dir)
{
	if (tunnel_status_set_socket_directory(dir))
		tunnel_status_catalog_changed();
}

/*
 * The socket directory was refused (the reason in error): the tunnels stop
 * offering it, to clients and as tunnel_status_connect_host().  Logged once
 * per reason, not at every forward's bind retry.
 */
static void
socket_dir_refuse(const char *error)
{
	publish_socket_dir(NULL);
	if (strcmp(error, socket_dir_refused) == 0)
		return;
	strlcpy(socket_dir_refused, error, sizeof(socket_dir_refused));
	ereport(WARNING,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("tunnel_ssh refuses its socket directory: %s", error),
			 errdetail("The tunnels listen on no Unix socket until it is fixed; they are retried every second."),
			 errhint("Let tunnel_ssh.socket_directory name a directory that the server's OS user owns (or can create), not a symbolic link, in parent directories that no other user can write to (unless they have the sticky bit).")));
}

static void
socket_dir_accept(void)
{
	publish_socket_dir(socket_dir);
	socket_dir_refused[0] = '\0';
}

char *
tunnel_forwards_listen_settings(MemoryContext cxt)
{
	char		error[TUNNEL_ERROR_MAXLEN];
	MemoryContext old = MemoryContextSwitchTo(cxt);
	char	   *settings;

	if (socket_dir)
		pfree(socket_dir);
	socket_dir = tunnel_socket_directory_path();
	if (socket_dir == NULL)
		publish_socket_dir(NULL);
	else if (listener_prepare_directory(socket_dir, error, sizeof(error)))
		socket_dir_accept();
	else
		socket_dir_refuse(error);
	settings = psprintf("%s|%d|%s", tunnel_listen_address,
						tunnel_allow_remote_listen,
						socket_dir ? socket_dir : "");
	MemoryContextSwitchTo(old);
	return settings;
}

/*
 * The forward's Unix socket could not be opened.  Logged when the reason
 * changes: a socket another server holds as a WARNING of its own (the
 * DBA has two servers sharing a directory), a refused directory once for
 * all forwards.
 */
static void
unix_listener_failed(TunnelForward *wf, ListenerFailure why,
					 const char *error)
{
	if (why == LISTENER_UNSAFE_DIRECTORY)
		socket_dir_refuse(error);
	else
		socket_dir_accept();	/* the directory passed its checks */
	if (strcmp(error, wf->unix_error) == 0)
		return;
	strlcpy(wf->unix_error, error, sizeof(wf->unix_error));
	if (why == LISTENER_SOCKET_IN_USE)
		ereport(WARNING,
				(errcode(ERRCODE_LOCK_FILE_EXISTS),
				 errmsg("tunnel \"%s\" cannot listen on its Unix socket for port %d",
						wf->owner->name, wf->local_port),
				 errdetail("%s", error),
				 errhint("Give each server its own tunnel_ssh.socket_directory, or its own ports.  If no such server runs, remove \"%s/.s.PGSQL.%d.lock\".",
						 socket_dir, wf->local_port)));
	else if (why == LISTENER_FAILED)
		ereport(LOG,
				(errmsg("tunnel \"%s\": %s", wf->owner->name, error)));
}

/*
 * Open the listeners a forward lacks: a Unix socket in socket_dir, and TCP
 * on tunnel_ssh.listen_address (if set, and loopback unless allowed).  False,
 * with the reason in error, if the forward listens nowhere or TCP failed.
 * A Unix socket refused while TCP serves is in the forward's last_error,
 * and retried.
 */
static bool
open_forward_listeners(TunnelForward *wf, char *error, size_t errlen)
{
	bool		tcp = tunnel_listen_address[0] != '\0';
	char		unix_error[TUNNEL_ERROR_MAXLEN];

	unix_error[0] = '\0';
	if (!tcp && socket_dir == NULL)
	{
		snprintf(error, errlen,
				 "tunnel_ssh.listen_address is empty and there is no usable tunnel_ssh.socket_directory: nothing to listen on");
		return false;
	}
	if (socket_dir && wf->unix_listener == NULL)
	{
		ListenerFailure why;

		wf->unix_listener = listener_open_unix(socket_dir, wf->local_port,
											   on_accept, wf, &why,
											   unix_error, sizeof(unix_error));
		if (wf->unix_listener == NULL)
			unix_listener_failed(wf, why, unix_error);
		else
		{
			socket_dir_accept();
			wf->unix_error[0] = '\0';
		}
	}
	if (tcp && wf->listener == NULL)
	{
		if (!tunnel_allow_remote_listen &&
			!listener_is_loopback(tunnel_listen_address))
		{
			snprintf(error, errlen,
					 "tunnel_ssh.listen_address \"%s\" is not a loopback address: set tunnel_ssh.allow_remote_listen to listen there",
					 tunnel_listen_address);
			return false;
		}
		wf->listener = listener_open(tunnel_listen_address, wf->local_port,
									 on_accept, wf, error, errlen);
		if (wf->listener == NULL)
			return false;
	}
	if (unix_error[0] != '\0')
	{
		if (!tcp)
		{
			strlcpy(error, unix_error, errlen);
			/* Logged above: bind_listeners need not log it again. */
			strlcpy(wf->bind_error, unix_error, sizeof(wf->bind_error));
			return false;
		}
		tunnel_status_forward_error(wf->slot, unix_error);
		wf->owner->bind_retry_at =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										TUNNEL_FORWARDS_BIND_RETRY_MS);
	}
	return true;
}

bool
tunnel_forwards_bind(TunnelForwards *fs)
{
	ListCell   *lc;
	bool		all = true;
	MemoryContext old = MemoryContextSwitchTo(fs->cxt);

	foreach(lc, fs->list)
	{
		TunnelForward *wf = lfirst(lc);
		char		error[TUNNEL_ERROR_MAXLEN];

		if (!open_forward_listeners(wf, error, sizeof(error)))
		{
			all = false;
			if (strcmp(error, wf->bind_error) != 0)
			{
				ereport(LOG,
						(errmsg("tunnel \"%s\": %s", fs->name, error)));
				strlcpy(wf->bind_error, error, sizeof(wf->bind_error));
			}
			tunnel_status_set_state(fs->slot, TUNNEL_STATE_BIND_FAILED, error);
			fs->bind_failed = true;
			tunnel_status_forward_set_listening(wf->slot, false, error);
		}
		else
		{
			wf->bind_error[0] = '\0';
			tunnel_status_forward_set_listening(wf->slot, true, NULL);
		}
	}
	MemoryContextSwitchTo(old);
	return all;
}

void
tunnel_forwards_sync(TunnelForwards *fs, const TunnelDef *def)
{
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(fs->cxt);

	foreach(lc, def->forwards)
	{
		ForwardDef *fd = lfirst(lc);
		TunnelForward *wf = NULL;
		ListCell   *lc2;

		foreach(lc2, fs->list)
		{
			TunnelForward *cand = lfirst(lc2);

			if (cand != NULL && cand->local_port == fd->local_port)
			{
				wf = cand;
				lfirst(lc2) = NULL;
				break;
			}
		}
		if (wf == NULL)
		{
			wf = palloc0(sizeof(TunnelForward));
			wf->owner = fs;
			wf->local_port = fd->local_port;
			wf->slot = tunnel_status_forward_acquire(fs->name,
													 fd->local_port);
			if (wf->slot == NULL)
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("forward %d of tunnel \"%s\" has no status slot",
								fd->local_port, fs->name),
						 errhint("Raise tunnel_ssh.max_forwards.")));
		}
		/* New clients go to the new target; open channels keep theirs. */
		strlcpy(wf->remote_host, fd->remote_host, sizeof(wf->remote_host));
		wf->remote_port = fd->remote_port;
		tunnel_status_forward_set_target(wf->slot, wf->remote_host,
										 wf->remote_port);
		kept = lappend(kept, wf);
	}
	foreach(lc, fs->list)
	{
		TunnelForward *gone = lfirst(lc);

		if (gone == NULL)
			continue;
		close_forward_listeners(gone);
		tunnel_status_forward_release(gone->slot);
		pfree(gone);
	}
	list_free(fs->list);
	fs->list = kept;
	MemoryContextSwitchTo(old);

	if (fs->list != NIL)
	{
		TunnelForward *first = linitial(fs->list);

		tunnel_status_set_listen(fs->slot,
								 tunnel_listen_address[0] != '\0' || socket_dir == NULL ?
								 tunnel_listen_address : socket_dir,
								 first->local_port);
	}
}
