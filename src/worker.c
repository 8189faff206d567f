/* worker.c: placeholder */
#include "postgres.h"
