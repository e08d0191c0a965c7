/* Test helper: runs a throwaway redis-server on a free loopback port, by
 * PID, and talks to it with a blocking hiredis context. */
#ifndef SG_TEST_REDIS_HELPER_H
#define SG_TEST_REDIS_HELPER_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define REDIS_SERVER_BIN "/usr/bin/redis-server"

typedef struct test_redis {
    pid_t pid;
    int port;
    const char *password; /* --requirepass, or NULL */
} test_redis_t;

static int test_redis_available(void)
{
    return access(REDIS_SERVER_BIN, X_OK) == 0;
}

/* A port nothing listens on right now (bind to 0, read it back). */
static int test_redis_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_redis_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A blocking client, authenticated if needed; NULL when not reachable. */
static redisContext *test_redis_client(const test_redis_t *r)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    if (r->password != NULL) {
        redisReply *rep = redisCommand(c, "AUTH %s", r->password);
        if (rep != NULL)
            freeReplyObject(rep);
    }
    return c;
}

/* Forks redis-server on r->port and waits (up to 5 s) for PONG. 0 or -1. */
static int test_redis_start(test_redis_t *r)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", r->port);
    r->pid = fork();
    if (r->pid < 0)
        return -1;
    if (r->pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        if (r->password != NULL)
            execl(REDIS_SERVER_BIN, "redis-server", "--port", port, "--bind",
                  "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--requirepass", r->password, (char *)NULL);
        else
            execl(REDIS_SERVER_BIN, "redis-server", "--port", port, "--bind",
                  "127.0.0.1", "--save", "", "--appendonly", "no",
                  (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            return -1; /* exited early (port taken?) */
        }
        redisContext *c = test_redis_client(r);
        if (c != NULL) {
            redisReply *rep = redisCommand(c, "PING");
            int ok = rep != NULL && rep->type == REDIS_REPLY_STATUS &&
                     strcmp(rep->str, "PONG") == 0;
            if (rep != NULL)
                freeReplyObject(rep);
            redisFree(c);
            if (ok)
                return 0;
        }
        test_redis_sleep_ms(20);
    }
    return -1;
}

/* SIGKILL by PID, then reap. */
static void test_redis_kill(test_redis_t *r)
{
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->pid = 0;
    }
}

/* Integer reply of a command, or -1000 on any failure. */
static long long test_redis_int(const test_redis_t *r, const char *fmt,
                                const char *arg)
{
    long long v = -1000;
    redisContext *c = test_redis_client(r);
    if (c == NULL)
        return v;
    redisReply *rep = redisCommand(c, fmt, arg);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    if (rep != NULL)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* PUBSUB NUMSUB <channel> -> subscriber count, or -1000. */
__attribute__((unused)) static long long test_redis_numsub(const test_redis_t *r, const char *chan)
{
    long long v = -1000;
    redisContext *c = test_redis_client(r);
    if (c == NULL)
        return v;
    redisReply *rep = redisCommand(c, "PUBSUB NUMSUB %s", chan);
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_INTEGER)
        v = rep->element[1]->integer;
    if (rep != NULL)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

/* PUBLISH from an independent client; returns receivers or -1000. */
__attribute__((unused)) static long long test_redis_publish(const test_redis_t *r, const char *chan,
                                    const char *payload, size_t len)
{
    long long v = -1000;
    redisContext *c = test_redis_client(r);
    if (c == NULL)
        return v;
    redisReply *rep = redisCommand(c, "PUBLISH %s %b", chan, payload, len);
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    if (rep != NULL)
        freeReplyObject(rep);
    redisFree(c);
    return v;
}

#endif
