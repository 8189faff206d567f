/*
 * The few backend symbols src/keys.c needs, for a standalone fuzz binary:
 * palloc/pfree/psprintf on malloc (so ASan and LeakSanitizer see every
 * allocation), and an ereport that aborts at ERROR or above, since the
 * functions under test promise never to raise one (keys_public_from_private
 * returns false instead; keys_fingerprint_from_digest cannot fail).
 *
 * Deliberately not compiled with postgres.h: the server headers would turn
 * vsnprintf into pg_vsnprintf, which lives in the server binary.
 */
#define _GNU_SOURCE				/* vasprintf */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STUB_ERROR 21			/* elog.h: ERROR */

static int	pending_level;
static char pending_text[512];

static void
append(const char *fmt, va_list ap)
{
	size_t		used = strlen(pending_text);

	if (used < sizeof(pending_text) - 1)
		vsnprintf(pending_text + used, sizeof(pending_text) - used, fmt, ap);
}

void *
palloc(size_t size)
{
	void	   *p = malloc(size ? size : 1);

	if (p == NULL)
		abort();
	return p;
}

void
pfree(void *pointer)
{
	free(pointer);
}

char *
psprintf(const char *fmt,...)
{
	va_list		ap;
	char	   *out;

	va_start(ap, fmt);
	if (vasprintf(&out, fmt, ap) < 0)
		abort();
	va_end(ap);
	return out;
}

bool
errstart(int elevel, const char *domain)
{
	pending_level = elevel;
	pending_text[0] = '\0';
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	append(fmt, ap);
	va_end(ap);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	va_list		ap;

	strncat(pending_text, " DETAIL: ",
			sizeof(pending_text) - strlen(pending_text) - 1);
	va_start(ap, fmt);
	append(fmt, ap);
	va_end(ap);
	return 0;
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	fprintf(stderr, "ereport(%d) at %s:%d (%s): %s\n", pending_level,
			filename, lineno, funcname ? funcname : "?", pending_text);
	if (pending_level >= STUB_ERROR)
		abort();
}
