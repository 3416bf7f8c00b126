/* backoff.h - retry policy as pure functions (the clock is the database's:
 * next_attempt = now() + backoff_delay()). */
#pragma once
#include <stdbool.h>

/* Seconds to wait after failed attempt number `attempt` (1-based): base * 2^(attempt-1),
 * capped at 300 s. */
double backoff_delay(double base, int attempt);
/* Whether another attempt is allowed after `attempts` failures. */
bool backoff_may_retry(int attempts, int max_attempts);
