/* session.c: placeholder */
#include "postgres.h"
