/* functions.c: placeholder */
#include "postgres.h"
