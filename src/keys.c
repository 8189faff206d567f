/* keys.c: placeholder */
#include "postgres.h"
