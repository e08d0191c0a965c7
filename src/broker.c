/* Engine-independent entry points of the broker (broker.h): each forwards
 * to the engine's vtable. */
#include "broker.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "error.h"

const char *sg_broker_mode(const sg_broker_t *b)
{
    return b->vt->mode;
}

int sg_broker_is_ready(const sg_broker_t *b)
{
    return b->vt->is_ready(b);
}

const char *sg_broker_status_text(const sg_broker_t *b)
{
    return b->vt->status_text(b);
}

int sg_broker_subscribe(sg_broker_t *b, const char *session_id)
{
    return b->vt->subscribe(b, session_id);
}

int sg_broker_unsubscribe(sg_broker_t *b, const char *session_id)
{
    return b->vt->unsubscribe(b, session_id);
}

size_t sg_broker_subscription_count(const sg_broker_t *b)
{
    return b->vt->subscription_count(b);
}

int sg_broker_publish(sg_broker_t *b, const char *session_id,
                      const char *payload, size_t len)
{
    return b->vt->publish(b, session_id, payload, len);
}

int sg_broker_history_append(sg_broker_t *b, const char *session_id,
                             const char *payload, size_t len,
                             sg_broker_done_cb cb, void *arg)
{
    return b->vt->history_append(b, session_id, payload, len, cb, arg);
}

int sg_broker_history_get(sg_broker_t *b, const char *session_id,
                          sg_broker_list_cb cb, void *arg)
{
    return b->vt->history_get(b, session_id, cb, arg);
}

int sg_broker_history_clear(sg_broker_t *b, const char *session_id,
                            sg_broker_done_cb cb, void *arg)
{
    return b->vt->history_clear(b, session_id, cb, arg);
}

void sg_broker_close(sg_broker_t *b, sg_broker_closed_cb cb, void *arg)
{
    b->vt->close(b, cb, arg);
}

int sg_broker_stream_append(sg_broker_t *b, const char *session_id,
                            const sg_chatmsg_t *msg, sg_broker_append_cb cb,
                            void *arg)
{
    return b->vt->stream_append(b, session_id, msg, cb, arg);
}

int sg_broker_stream_read(sg_broker_t *b, const char *session_id,
                          uint64_t since, int with_history,
                          sg_broker_read_cb cb, void *arg)
{
    return b->vt->stream_read(b, session_id, since, with_history, cb, arg);
}

int sg_broker_command(sg_broker_t *b, int argc, const char *const *argv,
                      const size_t *lens, sg_broker_reply_cb cb, void *arg)
{
    if (b->vt->command == NULL)
        return SG_ENOTSUP;
    return b->vt->command(b, argc, argv, lens, cb, arg);
}

void sg__broker_new_epoch(char out[SG_EPOCH_LEN + 1])
{
    static uint64_t mix = 0x9e3779b97f4a7c15ull;
    unsigned char raw[SG_EPOCH_LEN / 2];
    ssize_t n = getrandom(raw, sizeof(raw), GRND_NONBLOCK);
    if (n != (ssize_t)sizeof(raw)) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        n = fd >= 0 ? read(fd, raw, sizeof(raw)) : -1;
        if (fd >= 0)
            close(fd);
    }
    if (n != (ssize_t)sizeof(raw)) {
        mix ^= uv_hrtime();
        mix ^= mix << 13;
        mix ^= mix >> 7;
        mix ^= mix << 17;
        memcpy(raw, &mix, sizeof(raw));
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}
