/* tp_sub: subscribe at QoS 1 and count what actually arrives.
 *
 *   tp_sub HOST PORT FILTER EXPECTED [--receive-maximum N] [--idle-s S] [--id CLIENT_ID]
 *
 * Prints "subscribed" once the SUBACK came (start publishing after that), and
 * at the end one JSON line: {"received","first_ns","last_ns"} (CLOCK_REALTIME).
 * Stops at EXPECTED messages, or when nothing arrived for --idle-s seconds.
 * Build: cc -O2 -o tp_sub tp_sub.c -lmosquitto   (apt-get install libmosquitto-dev)
 */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long received = 0, first_ns = 0, last_ns = 0;
static int subscribed = 0, failed = 0;
static const char *filter;

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void on_connect(struct mosquitto *m, void *u, int rc, int flags, const mosquitto_property *p) {
    (void)u; (void)flags; (void)p;
    if (rc != 0) { failed = rc; return; }
    mosquitto_subscribe(m, NULL, filter, 1);
}

static void on_subscribe(struct mosquitto *m, void *u, int mid, int n, const int *granted) {
    (void)m; (void)u; (void)mid;
    if (n < 1 || granted[0] > 1) { failed = -2; return; }
    subscribed = 1;
    printf("subscribed\n");
    fflush(stdout);
}

static void on_message(struct mosquitto *m, void *u, const struct mosquitto_message *msg) {
    (void)m; (void)u; (void)msg;
    last_ns = now_ns();
    if (!received) first_ns = last_ns;
    received++;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: tp_sub HOST PORT FILTER EXPECTED [--receive-maximum N] [--idle-s S] [--id ID]\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    filter = argv[3];
    long long expected = atoll(argv[4]);
    int receive_maximum = 1000;
    double idle_s = 10;
    const char *id = "tp_sub";
    for (int i = 5; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--receive-maximum")) receive_maximum = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--idle-s")) idle_s = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--id")) id = argv[i + 1];
        else { fprintf(stderr, "tp_sub: unknown option %s\n", argv[i]); return 2; }
    }
    mosquitto_lib_init();
    struct mosquitto *mosq = mosquitto_new(id, true, NULL);
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(mosq, MOSQ_OPT_RECEIVE_MAXIMUM, receive_maximum);
    mosquitto_connect_v5_callback_set(mosq, on_connect);
    mosquitto_subscribe_callback_set(mosq, on_subscribe);
    mosquitto_message_callback_set(mosq, on_message);
    if (mosquitto_connect(mosq, host, port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "tp_sub: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    long long started = now_ns();
    while (received < expected && !failed) {
        int rc = mosquitto_loop(mosq, 100, 1000);
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "tp_sub: network loop: %s\n", mosquitto_strerror(rc));
            failed = rc;
            break;
        }
        long long since = now_ns() - (received ? last_ns : started);
        if (subscribed && since > (long long)(idle_s * 1e9) && (received || since > 6e10)) break;
    }
    mosquitto_disconnect(mosq);
    mosquitto_loop(mosq, 100, 1);
    mosquitto_destroy(mosq);
    mosquitto_lib_cleanup();
    printf("{\"received\": %lld, \"first_ns\": %lld, \"last_ns\": %lld}\n", received, first_ns, last_ns);
    return failed ? 1 : 0;
}
