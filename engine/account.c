/* account.c: charges counted up a chain of accounts (see account.h). Every operation walks the
 * chain, three links at most (connection, client certificate, process): a few additions, which is
 * all the data path pays for the budgets. */
#include "account.h"

#include <stddef.h>

static struct account process_account = {.name = "-server.buffer.max.mib"};

struct account *
account_process(void)
{
    return &process_account;
}

void
account_process_limit(int64_t bytes_max)
{
    process_account.bytes_max = bytes_max;
}

void
account_init(struct account *a, struct account *parent, int64_t bytes_max, const char *name)
{
    a->name = name;
    a->parent = parent != NULL ? parent : &process_account;
    a->bytes = 0;
    a->bytes_max = bytes_max;
    a->sessions = 0;
    a->refs = 0;
    a->release = NULL;
    a->release_arg = NULL;
    account_ref(a->parent);
}

void
account_fini(struct account *a)
{
    struct account *p = a->parent;

    a->parent = NULL;
    if (p != NULL) account_unref(p);
}

void
account_reparent(struct account *a, struct account *parent)
{
    struct account *old = a->parent, *p;

    if (parent == NULL) parent = &process_account;
    for (p = old; p != NULL; p = p->parent) {
        p->sessions -= a->sessions;
        p->bytes -= a->bytes;
    }
    for (p = parent; p != NULL; p = p->parent) {
        p->sessions += a->sessions;
        p->bytes += a->bytes;
    }
    a->parent = parent;
    account_ref(parent);
    if (old != NULL) account_unref(old);
}

void
account_ref(struct account *a)
{
    a->refs++;
}

void
account_unref(struct account *a)
{
    if (--a->refs == 0 && a->release != NULL) a->release(a, a->release_arg);
}

void
account_open(struct account *a)
{
    struct account *p;

    account_ref(a);
    for (p = a; p != NULL; p = p->parent)
        p->sessions++;
}

void
account_close(struct account *a, int64_t bytes)
{
    struct account *p;

    for (p = a; p != NULL; p = p->parent) {
        p->sessions--;
        p->bytes -= bytes;
    }
    account_unref(a);
}

void
account_charge(struct account *a, int64_t delta)
{
    for (; a != NULL; a = a->parent)
        a->bytes += delta;
}

void
account_moved_to_peer(struct account *a, uint64_t n)
{
    for (; a != NULL; a = a->parent)
        a->to_peer += n;
}

void
account_moved_from_peer(struct account *a, uint64_t n)
{
    for (; a != NULL; a = a->parent)
        a->from_peer += n;
}

int64_t
account_room(const struct account *a)
{
    int64_t room = INT64_MAX;

    for (; a != NULL; a = a->parent)
        if (a->bytes_max > 0 && a->bytes_max - a->bytes < room) room = a->bytes_max - a->bytes;
    return room;
}

const struct account *
account_tightest(const struct account *a)
{
    const struct account *t = a;
    int64_t room = INT64_MAX;

    for (; a != NULL; a = a->parent) {
        if (a->bytes_max > 0 && a->bytes_max - a->bytes < room) {
            room = a->bytes_max - a->bytes;
            t = a;
        }
    }
    return t;
}
