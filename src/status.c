/* status.c: placeholder */
#include "postgres.h"
