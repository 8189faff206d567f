/* forward.c: placeholder */
#include "postgres.h"
