/* notify.h: tells a service manager how the process is doing, by the sd_notify protocol: a
 * datagram to the unix socket named in $NOTIFY_SOCKET (systemd's Type=notify). Nothing when the
 * variable is not set. Written here, not linked from libsystemd: it is one datagram. */
#ifndef TUNNELS_NOTIFY_H
#define TUNNELS_NOTIFY_H

/* The listener is up: dependants may start ("READY=1", with a STATUS line). */
void notify_ready(const char *status);
/* SIGHUP: reading the configuration again ("RELOADING=1"); notify_ready follows. */
void notify_reloading(void);
/* SIGTERM/SIGINT: draining ("STOPPING=1"). */
void notify_stopping(void);

#endif
