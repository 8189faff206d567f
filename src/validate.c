/* validate.c: placeholder */
#include "postgres.h"
