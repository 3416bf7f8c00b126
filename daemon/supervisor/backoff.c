/* backoff.c - exponential backoff; no clock reads here so tests need no sleeps. */
#include "backoff.h"

#define BACKOFF_CAP 300.0

double backoff_delay(double base, int attempt)
{
        double d = base;

        if (attempt < 1)
                return 0;
        for (int i = 1; i < attempt && d < BACKOFF_CAP; i++)
                d *= 2;
        return d < BACKOFF_CAP ? d : BACKOFF_CAP;
}

bool backoff_may_retry(int attempts, int max_attempts) { return attempts < max_attempts; }
