#define _GNU_SOURCE
// link-delayer: holds every packet of an NFQUEUE for a fixed delay, then accepts it, in arrival
// order. Launch/sim-cluster runs one per simulated node, inside the node's network namespace,
// behind an iptables rule that queues the node's outgoing packets on its link (eth0): a one-way
// delay on every node link, for kernels without tc netem.
//
//   link-delayer QUEUE DELAY_US
//
// Built by Launch/sim-cluster with gcc against libnetfilter-queue (Debian: libnetfilter-queue-dev).
// Packets keep their order (one FIFO, one fixed delay); the program adds its own latency on top
// (the script measures and reports the real one-way latency, not the requested one).
#include <errno.h>
#include <arpa/inet.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAPACITY 65536  /* packets held at once; beyond that packets are accepted at once */

static struct nfq_q_handle *queue;
static uint32_t held_id[CAPACITY];
static uint64_t held_due[CAPACITY];
static size_t head, count;
static uint64_t delay_ns;
static volatile sig_atomic_t stopping;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int on_packet(struct nfq_q_handle *q, struct nfgenmsg *message, struct nfq_data *data, void *context) {
    (void)message; (void)context;
    struct nfqnl_msg_packet_hdr *header = nfq_get_msg_packet_hdr(data);
    if (!header) return 0;
    uint32_t id = ntohl(header->packet_id);
    if (count == CAPACITY) return nfq_set_verdict(q, id, NF_ACCEPT, 0, NULL);
    size_t slot = (head + count) % CAPACITY;
    held_id[slot] = id;
    held_due[slot] = now_ns() + delay_ns;
    count++;
    return 0;
}

/* Accepts every held packet whose time has come; returns ns until the next one is due, or -1. */
static int64_t release_due(void) {
    uint64_t now = now_ns();
    while (count > 0 && held_due[head] <= now) {
        nfq_set_verdict(queue, held_id[head], NF_ACCEPT, 0, NULL);
        head = (head + 1) % CAPACITY;
        count--;
    }
    if (count == 0) return -1;
    return (int64_t)(held_due[head] - now);
}

static void on_signal(int signal) { (void)signal; stopping = 1; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: link-delayer QUEUE DELAY_US\n");
        return 2;
    }
    int queue_number = atoi(argv[1]);
    delay_ns = (uint64_t)strtoull(argv[2], NULL, 10) * 1000u;
    struct nfq_handle *handle = nfq_open();
    if (!handle) { perror("link-delayer: nfq_open"); return 1; }
    queue = nfq_create_queue(handle, (uint16_t)queue_number, on_packet, NULL);
    if (!queue) { perror("link-delayer: nfq_create_queue"); return 1; }
    if (nfq_set_mode(queue, NFQNL_COPY_META, 0) < 0) { perror("link-delayer: nfq_set_mode"); return 1; }
    nfq_set_queue_maxlen(queue, CAPACITY);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int fd = nfq_fd(handle);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  /* wake on time, not up to 50 µs late */
    char buffer[65536] __attribute__((aligned));
    while (!stopping) {
        int64_t wait = release_due();
        if (wait < 0) wait = 100000000;  /* nothing held: look again in 100 ms */
        struct timespec timeout = { .tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000 };
        struct pollfd poll_fd = { .fd = fd, .events = POLLIN };
        int ready = ppoll(&poll_fd, 1, &timeout, NULL);
        if (ready > 0) {
            ssize_t received;
            while ((received = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) nfq_handle_packet(handle, buffer, (int)received);
        }
    }
    while (count > 0) { nfq_set_verdict(queue, held_id[head], NF_ACCEPT, 0, NULL); head = (head + 1) % CAPACITY; count--; }
    nfq_destroy_queue(queue);
    nfq_close(handle);
    return 0;
}
