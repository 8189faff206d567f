/*-------------------------------------------------------------------------
 *
 * api.h
 *	  Helpers shared by the SQL-callable functions (api_*.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef TUNNEL_API_H
#define TUNNEL_API_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "fmgr.h"

#include "validate.h"

/* A tunnel's row, locked against concurrent changes (tunnel_lock_row). */
typedef struct TunnelRow
{
	char	   *ssh_host;
	int			ssh_port;
	char	   *ssh_user;
	char	   *key_type;
	char	   *key_fingerprint;
	char	   *host_key_fingerprint;
	char	   *next_key_fingerprint;
	char	   *via;			/* jump tunnel, or NULL */
	int			nforwards;
} TunnelRow;

/*
 * Lock the tunnel's row (FOR UPDATE) and read it into row, or raise "does
 * not exist".  Needs SPI.
 */
extern void tunnel_lock_row(const char *name, TunnelRow *row);

/* An optional text argument: NULL, or its value. */
extern char *tunnel_arg_optional_text(FunctionCallInfo fcinfo, int argno);

/* A text argument that must not be NULL ("what" names it in the error). */
extern char *tunnel_arg_text(FunctionCallInfo fcinfo, int argno,
							 const char *what);

/*
 * Unless ok, raise "invalid <what> "<value>"" with the validator's reason as
 * errdetail.
 */
extern void tunnel_check_arg(bool ok, const char *const *reason,
							 const char *what, const char *value);

/* A port argument: not NULL, 1..65535. */
extern void tunnel_arg_port(FunctionCallInfo fcinfo, int argno,
							const char *what);

/*
 * Host key pins as given to host_key_fingerprint, in their canonical form
 * (validate_host_key_pins), or an error saying what is wrong.
 */
extern char *tunnel_check_host_key_pins(const char *text);

/* A local port a tunnel may listen on: 1024..65535. */
extern void tunnel_check_local_port(int port);

/* What to tell whoever creates an RSA key. */
extern void tunnel_notice_rsa(void);

/* The tunnel whose forward holds a local port, or NULL.  Needs SPI. */
extern char *tunnel_port_holder(int port);

/*
 * Column attno of an SPI result as text, copied into the memory context that
 * was current at SPI_connect: SPI_getvalue's own copy dies with SPI_finish.
 * For a secret, SPI's copy is wiped as well.  Needs SPI.
 */
extern char *tunnel_spi_value(HeapTuple tuple, TupleDesc desc, int attno,
							  bool secret);

/*
 * Take the lock that serializes every change of local ports (tunnel_create,
 * tunnel_alter, tunnel_forward_add and _drop), so that two cannot take the
 * same port.  Needs SPI.
 */
extern void tunnel_lock_ports(void);

/*
 * An error if a forward of another tunnel than except (which may be NULL)
 * has local port port.  Needs SPI.
 */
extern void tunnel_require_port_free(int port, const char *except);

/* A free port from tunnel_ssh.port_range, or an error.  Needs SPI. */
extern int	tunnel_pick_port(void);

extern bool tunnel_exists(const char *name);

/* The error for a tunnel name that names no tunnel. */
extern void tunnel_not_found(const char *name);

/* An error unless the tunnel exists.  Needs SPI. */
extern void tunnel_require(const char *name);

/*
 * Run a statement with the tunnel name (argument 0) as $1 in its own SPI
 * connection; an error if it finds no row.  Returns the first column of the
 * first row (in the function's memory context), if any.
 */
extern char *tunnel_for_existing(FunctionCallInfo fcinfo, const char *sql,
								 bool read_only);

/*
 * The authorized_keys line of a tunnel's key (of the pending rotation's key
 * when next), or NULL if there is none.  Restricted, it lets the key open
 * direct-tcpip channels to the tunnel's targets and, for a jump tunnel, to
 * the bastions reached through it, and run nothing but a refusal.  Needs
 * SPI; the result lives in the context current at SPI_connect.
 */
extern char *tunnel_authorized_line(const char *name, bool restricted,
									bool next);

/*
 * The restricted lines of a tunnel's keys before a change, and a NOTICE
 * with each line the change altered.  Both need SPI.
 */
/*
 * The AuthorizedPrincipalsFile line for principal, with the restrictions of
 * the tunnel's authorized_keys line; SPI-palloc'd.  Needs SPI.
 */
extern char *tunnel_principals_line(const char *name, const char *principal);

typedef struct TunnelLines
{
	char	   *current;
	char	   *next;
} TunnelLines;
extern void tunnel_lines_before(const char *name, TunnelLines *before);
extern void tunnel_notice_changed_lines(const char *name,
										const TunnelLines *before);

/*
 * A statement's SPI result code, passed on; a negative one (SPI could not
 * run it) is an internal error.
 */
extern int	tunnel_spi_check(int rc);

/* Run a catalog write; an SPI failure is an internal error. */
extern void tunnel_spi_run(const char *sql, int nargs, Oid *types,
						   Datum *values, const char *nulls);

/*
 * Run a catalog write whose $2 is a private key ($1 the tunnel's name),
 * without the key ever being a parameter or constant that logging can
 * print (auto_explain, EXPLAIN VERBOSE, an error's context).
 */
extern void tunnel_spi_write_secret(const char *sql, const char *tunnel,
									const char *secret);

/*
 * Forget the host keys recorded for the bastions of tunnel name but the
 * first (a list changed, or a reset).  Needs SPI.
 */
extern void tunnel_forget_bastion_host_keys(const char *name);

/*
 * The host keys recorded for bastions[1..n-1] of tunnel name (the first's is
 * the tunnel's own), with their algorithms, into keys[i] and algorithms[i]
 * (left as they are where none is recorded).  Needs SPI.
 */
extern void tunnel_bastion_host_keys(const char *name,
									 const ValidatedBastion *bastions, int n,
									 char **keys, char **algorithms);

#endif							/* TUNNEL_API_H */
