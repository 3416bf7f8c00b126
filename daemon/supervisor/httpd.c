/* httpd.c - see httpd.h. The snapshot is swapped under a mutex held only for
 * a copy of a few kilobytes, by the loop when it publishes and by the thread
 * when it builds a response. */
#include "httpd.h"
#include "util.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define IDLE_TIMEOUT 10 /* seconds before an idle or slow client is dropped */
#define MAX_CONNECTIONS 512

struct Httpd {
        struct MHD_Daemon *daemon;
        pthread_mutex_t lock;
        Buf text;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body, size_t len, bool copy)
{
        struct MHD_Response *r = MHD_create_response_from_buffer(
                len, (void *)body, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);

        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, status == MHD_HTTP_OK ? CONTENT_TYPE : "text/plain");
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        enum MHD_Result ok = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ok;
}

static enum MHD_Result serve_metrics(Httpd *h, struct MHD_Connection *conn)
{
        pthread_mutex_lock(&h->lock);
        enum MHD_Result ok = reply(conn, MHD_HTTP_OK, h->text.data ? h->text.data : "", h->text.len, true);
        pthread_mutex_unlock(&h->lock);
        return ok;
}

/* MHD calls this once per request before its body (then with the body, which
 * no request here has a use for: the answer is queued at the first call). */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
        const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
        static const char not_found[] = "not found: ingestd serves GET /metrics\n";
        static const char not_allowed[] = "method not allowed: ingestd serves GET /metrics\n";
        bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

        (void)version, (void)upload_data, (void)state;
        *upload_data_size = 0;
        if (strcmp(url, "/metrics") != 0)
                return reply(conn, MHD_HTTP_NOT_FOUND, not_found, sizeof not_found - 1, false);
        if (!get)
                return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, not_allowed, sizeof not_allowed - 1, false);
        return serve_metrics(cls, conn);
}

Httpd *httpd_start(const char *listen, char **ret_error)
{
        struct sockaddr_storage addr;
        unsigned len = 0;

        if (listen_parse(listen, &addr, &len) < 0) {
                *ret_error = xasprintf("metrics.listen \"%s\" is not HOST:PORT", listen);
                return NULL;
        }
        Httpd *h = xcalloc(1, sizeof *h);
        pthread_mutex_init(&h->lock, NULL);
        unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
        errno = 0;
        h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR,
                (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT,
                MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS, MHD_OPTION_END);
        if (!h->daemon) {
                *ret_error = xasprintf("cannot serve metrics on %s: %s", listen,
                        errno ? strerror(errno) : "libmicrohttpd refused to start");
                httpd_stop(h);
                return NULL;
        }
        return h;
}

void httpd_stop(Httpd *h)
{
        if (!h)
                return;
        if (h->daemon)
                MHD_stop_daemon(h->daemon);
        pthread_mutex_destroy(&h->lock);
        buf_free(&h->text);
        free(h);
}

void httpd_publish(Httpd *h, const char *text, size_t len)
{
        pthread_mutex_lock(&h->lock);
        h->text.len = 0;
        buf_append(&h->text, text, len);
        pthread_mutex_unlock(&h->lock);
}
