/* config.h: the values of every command-line flag, as one plain record. flags.c fills it;
 * everything else reads it. */
#ifndef TUNNELS_CONFIG_H
#define TUNNELS_CONFIG_H

#define CONFIG_SERVERS_MAX 8

/* What the text flags mean, parsed once by flags.c (the text stays for -h and the Lua hooks). */
enum config_role {
    ROLE_CLIENT = 1, /* -role=client */
    ROLE_SERVER,     /* -role=server */
};
enum config_lower {
    LOWER_TLS, /* the lower connections are TLS (the default) */
    LOWER_TCP, /* plain TCP: -remux.net=tcp or -eagersocks.net=tcp (tests, a trusted link) */
};
enum config_pooling {
    POOL_REMUX,       /* sessions share the pool's connections (-eagersocks.net=remux) */
    POOL_PER_SESSION, /* every session a connection of its own (-eagersocks.net=tls|tcp) */
};

struct config {
    enum config_role role_kind;
    enum config_lower lower;
    enum config_pooling pooling;
    int server_family, client_family; /* -server.net, -client.net: AF_UNSPEC, AF_INET or AF_INET6 */
    char role[16];
    char server_net[8], server_addr[256];
    char client_net[8], client_addr[256];
    long reuse_max_sec, reuse_max_cnt, idle_max_sec, conn_max_cnt, dial_max;
    char remux_net[8], eagersocks_net[8];
    long window_kib, window_max_kib, rtt_max_ms;
    long sessions_max, server_sessions_max, cert_sessions_max;
    long conn_buffer_max_mib, cert_buffer_max_mib, server_buffer_max_mib;
    long handshake_max, handshake_per_addr, conn_per_cert_max;
    long ping_sec, handshake_sec, socks_handshake_sec, connect_sec, hold_ms, drain_sec;
    long idle_sec, orphan_sec, hello_sec, udp_idle_sec;
    char tls_server_key[1024], tls_server_cert[1024], tls_server_ca[1024], tls_server_crl[1024];
    char tls_client_ca[1024], tls_client_key[1024], tls_client_cert[1024];
    char tls_client_name[256];
    int server_open, client_public;
    int log_level;
    char log_path[1024];
    char dingtalk_token[256], dingtalk_secret[256];
    char lua_script[1024];
    char socks_auth[1024];
    char config_path[1024]; /* -config: read before the command line, which overrides it */
    char metrics_addr[256];
    int metrics_public;
    long metrics_certs_max;
    long lua_budget_ms, lua_mem_max_mib;
    int server_allow_local, server_allow_private;
    char dingtalk_url[512], dingtalk_ca[1024];
    char webhook_url[512];
    long alert_burst, alert_every_sec, dingtalk_timeout_sec;
    /* client: -server.addr as a list of [name=]host:port (servers[0] is the first) */
    int nservers;
    struct {
        char name[64];
        char addr[256];
    } servers[CONFIG_SERVERS_MAX];
};

#endif
