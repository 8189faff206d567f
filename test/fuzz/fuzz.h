/* Shared by the fuzz targets: a NUL-terminated copy and a check that aborts. */
#ifndef TUNNEL_FUZZ_H
#define TUNNEL_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The input as the C string a caller would pass (text from SQL or the
 * catalog never holds a NUL byte): exactly size + 1 bytes, so ASan catches
 * any read past the terminator.  NULL if the input holds a NUL byte.
 */
static inline char *
fuzz_cstring(const uint8_t *data, size_t size)
{
	char	   *s;

	if (memchr(data, '\0', size) != NULL)
		return NULL;
	s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, \
					__FILE__, __LINE__); \
			abort(); \
		} \
	} while (0)

/* A failed validation must always say why. */
#define FUZZ_CHECK_RESULT(ok, reason) \
	FUZZ_CHECK((ok) ? (reason) == NULL : ((reason) != NULL && (reason)[0] != '\0'))

#endif
