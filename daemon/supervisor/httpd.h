/* httpd.h - the metrics endpoint: GET /metrics over HTTP (libmicrohttpd, on
 * its own thread, event-driven: a slow or idle client holds one connection,
 * never the others). It serves the last text the loop published and nothing
 * else: a scrape never waits on the database, a file or the loop. The
 * supervisor's one thread besides the loop. */
#pragma once
#include <stddef.h>

typedef struct Httpd Httpd;

/* Listens on `listen` ("HOST:PORT", util.h's listen_parse). Call with the
 * signals the loop reads blocked: the thread inherits the mask. NULL with
 * *ret_error on failure. */
Httpd *httpd_start(const char *listen, char **ret_error);
void httpd_stop(Httpd *h);
/* Replaces the text served (copied). */
void httpd_publish(Httpd *h, const char *text, size_t len);
