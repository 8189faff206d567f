/* catalog.c: placeholder */
#include "postgres.h"
