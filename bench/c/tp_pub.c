/* tp_pub: publish "topic<TAB>payload" lines from a file at QoS 1 through a
 * bounded in-flight window, and exit only once the broker acknowledged every
 * message (unlike `mosquitto_pub -l`, which exits 0 with QoS 1 messages still
 * queued).
 *
 *   tp_pub HOST PORT FILE [--window N] [--rate R] [--passes P] [--id CLIENT_ID]
 *
 * --rate R paces publishing at R messages/s (0: as fast as the window allows),
 * in bursts of what fell due since the last one, at most 1 ms apart.
 * --passes P publishes the file P times. Markers in a payload are filled in
 * at publish time: 19 '@' -> the current CLOCK_REALTIME in ns (19 digits),
 * 6 '%' -> the pass number, zero-padded (so txn_ids stay distinct across
 * passes), 12 '&' -> a per-topic counter, zero-padded (a device's seq then
 * goes on without a gap from one pass to the next).
 * Prints one JSON line: {"sent","acked","no_subscribers","start_ns","end_ns"}
 * (no_subscribers: PUBACKs with reason 0x10, events no subscription matched).
 * Build: cc -O2 -o tp_pub tp_pub.c -lmosquitto   (apt-get install libmosquitto-dev)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MARKS 8

struct msg {
    char *topic;
    char *payload;
    int len;
    int ts_at[MAX_MARKS];
    int n_ts;
    int pass_at[MAX_MARKS];
    int n_pass;
    int seq_at[MAX_MARKS];
    int n_seq;
    long topic_index;
};

/* topic -> index, to keep one seq counter per topic (open addressing, FNV-1a) */
static char **table_keys;
static long *table_values;
static unsigned long table_size;
static long topics = 0;

static long topic_index(char *topic) {
    unsigned long h = 1469598103934665603UL;
    for (char *c = topic; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211UL;
    for (unsigned long i = h & (table_size - 1);; i = (i + 1) & (table_size - 1)) {
        if (!table_keys[i]) { table_keys[i] = topic; table_values[i] = topics; return topics++; }
        if (!strcmp(table_keys[i], topic)) return table_values[i];
    }
}

static long long acked = 0, inflight = 0, no_subscribers = 0;
static int connected = 0, failed = 0;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *u, int rc, int flags, const mosquitto_property *p) {
    (void)m; (void)u; (void)flags; (void)p;
    if (rc == 0) connected = 1; else failed = rc;
}

static void on_publish(struct mosquitto *m, void *u, int mid, int rc, const mosquitto_property *p) {
    (void)m; (void)u; (void)mid; (void)p;
    /* 0x10 "no matching subscribers" is a success code, but the event went nowhere */
    if (rc == MQTT_RC_NO_MATCHING_SUBSCRIBERS) no_subscribers++;
    else if (rc >= 0x80) { fprintf(stderr, "tp_pub: PUBACK reason %d\n", rc); failed = rc; }
    acked++;
    inflight--;
}

static int find_marks(const char *s, int len, char c, int width, int *out) {
    int n = 0;
    for (int i = 0; i + width <= len && n < MAX_MARKS; i++) {
        int j = 0;
        while (j < width && s[i + j] == c) j++;
        if (j == width) { out[n++] = i; i += width - 1; }
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: tp_pub HOST PORT FILE [--window N] [--rate R] [--passes P] [--id ID]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    const char *path = argv[3];
    long window = 1000, passes = 1;
    double rate = 0;
    const char *id = "tp_pub";
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--window")) window = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate")) rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--passes")) passes = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--id")) id = argv[i + 1];
        else { fprintf(stderr, "tp_pub: unknown option %s\n", argv[i]); return 2; }
    }
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return 2; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc(size + 1);
    if (!data || fread(data, 1, size, f) != (size_t)size) { perror("read"); return 2; }
    data[size] = 0;
    fclose(f);
    long lines = 1;
    for (long i = 0; i < size; i++) lines += data[i] == '\n';
    for (table_size = 1024; table_size < 2 * (unsigned long)lines; table_size *= 2) {}
    table_keys = calloc(table_size, sizeof *table_keys);
    table_values = calloc(table_size, sizeof *table_values);
    long cap = 1024, n = 0;
    struct msg *msgs = malloc(cap * sizeof *msgs);
    for (char *line = data; line < data + size;) {
        char *end = memchr(line, '\n', data + size - line);
        if (!end) end = data + size;
        *end = 0;
        char *tab = memchr(line, '\t', end - line);
        if (tab) {
            if (n == cap) { cap *= 2; msgs = realloc(msgs, cap * sizeof *msgs); }
            *tab = 0;
            struct msg *m = &msgs[n++];
            m->topic = line;
            m->payload = tab + 1;
            m->len = (int)(end - tab - 1);
            m->n_ts = find_marks(m->payload, m->len, '@', 19, m->ts_at);
            m->n_pass = find_marks(m->payload, m->len, '%', 6, m->pass_at);
            m->n_seq = find_marks(m->payload, m->len, '&', 12, m->seq_at);
            m->topic_index = topic_index(m->topic);
        }
        line = end + 1;
    }
    long long total = (long long)n * passes;
    long long *seqs = calloc(topics + 1, sizeof *seqs);

    mosquitto_lib_init();
    struct mosquitto *mosq = mosquitto_new(id, true, NULL);
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, (int)window);
    mosquitto_connect_v5_callback_set(mosq, on_connect);
    mosquitto_publish_v5_callback_set(mosq, on_publish);
    if (mosquitto_connect(mosq, host, port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "tp_pub: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    while (!connected && !failed) {
        if (mosquitto_loop(mosq, 100, 1) != MOSQ_ERR_SUCCESS) { failed = -1; break; }
    }
    if (failed) { fprintf(stderr, "tp_pub: connect failed (%d)\n", failed); return 1; }

    long long sent = 0;
    long long start = now_ns();
    double interval = rate > 0 ? 1e9 / rate : 0;
    char digits[32];
    while (acked < total && !failed) {
        long long now = now_ns();
        while (sent < total && inflight < window && (rate <= 0 || start + (long long)(sent * interval) <= now)) {
            struct msg *m = &msgs[sent % n];
            long pass = (long)(sent / n);
            if (m->n_pass) {
                snprintf(digits, sizeof digits, "%06ld", pass % 1000000);
                for (int k = 0; k < m->n_pass; k++) memcpy(m->payload + m->pass_at[k], digits, 6);
            }
            if (m->n_seq) {
                snprintf(digits, sizeof digits, "%012lld", seqs[m->topic_index] % 1000000000000LL);
                for (int k = 0; k < m->n_seq; k++) memcpy(m->payload + m->seq_at[k], digits, 12);
            }
            seqs[m->topic_index]++;
            if (m->n_ts) {
                snprintf(digits, sizeof digits, "%019lld", now_ns());
                for (int k = 0; k < m->n_ts; k++) memcpy(m->payload + m->ts_at[k], digits, 19);
            }
            int rc = mosquitto_publish(mosq, NULL, m->topic, m->len, m->payload, 1, false);
            if (rc != MOSQ_ERR_SUCCESS) {
                fprintf(stderr, "tp_pub: publish failed: %s\n", mosquitto_strerror(rc));
                return 1;
            }
            sent++;
            inflight++;
            if (rate > 0) now = now_ns();
        }
        int timeout = 1000;
        if (sent < total && inflight < window && rate > 0) {
            /* Wait at least 1 ms for the next message that is due: what was due went
             * out above in one burst. A wait rounded down to 0 ms would spin on
             * select(), which cost 0.6 of a core at 13,500 messages/s, taken from
             * the processes under test on a shared machine. */
            long long due = start + (long long)(sent * interval) - now_ns();
            timeout = due > 1000000 ? (int)(due / 1000000) : 1;
        }
        int rc = mosquitto_loop(mosq, timeout, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "tp_pub: network loop: %s\n", mosquitto_strerror(rc));
            return 1;
        }
    }
    long long end = now_ns();
    mosquitto_disconnect(mosq);
    mosquitto_loop(mosq, 100, 1);
    mosquitto_destroy(mosq);
    mosquitto_lib_cleanup();
    printf("{\"sent\": %lld, \"acked\": %lld, \"no_subscribers\": %lld, \"start_ns\": %lld, \"end_ns\": %lld}\n",
           sent, acked, no_subscribers, start, end);
    return failed ? 1 : 0;
}
