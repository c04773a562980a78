// The kernels' thread pool: threads within a rank for the larger products, the sampler's attention
// and its per-sequence work. Workers start on the first call that wants them (more if a later call
// wants more). Between jobs a worker first polls for the next one for a short while, then sleeps on
// a condition variable: a sleeping worker takes tens of microseconds to wake, as long as many of a
// step's products, while a step's jobs follow each other within microseconds. The caller polls the
// same way for the workers to finish. Items are handed out one at a time from a shared counter: a
// thread slowed by other load on its core takes fewer, and the result does not depend on which
// thread ran which item.
#define _GNU_SOURCE  // sched_getaffinity
#include "CKernels.h"
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_WORKERS = 63,
    POLL_NANOSECONDS = 200000,  // how long a thread polls before it sleeps: a few of a step's jobs
};

long suder_parallel_min_work = 1L << 20;

typedef struct {
    long count;
    bool (*prepare)(void *context);
    void (*body)(void *context, long item);
    void *context;
    atomic_long next;
} Job;

// Every field is written under `lock`. `generation` and `running` are also polled without it, as
// hints that are checked again under `lock`: `generation` only grows, and `running` only falls
// once the job is closed. `busy` is held by the one caller whose job the workers serve.
static struct {
    pthread_mutex_t lock, busy;
    pthread_cond_t wake, finished;
    int workers;             // started, never stopped
    int cores;               // CPUs this process may run on (0 until the first workers start)
    long pollNanoseconds;    // the current job's polling budget: none when threads outnumber cores
    atomic_long generation;  // counts jobs, so a worker joins each job at most once
    bool open;               // the current job still takes workers
    int helpers;             // workers the current job wants
    int joined;              // workers that joined it
    atomic_int running;      // workers still in it
    Job *job;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

// Runs the job's next item until none is left.
static void takeItems(Job *job) {
    for (long item; (item = atomic_fetch_add(&job->next, 1)) < job->count;) job->body(job->context, item);
}

static long nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000L + now.tv_nsec;
}

// Polls until done(value) holds or `budget` nanoseconds pass. Reads the clock every 64 polls only.
static void pollFor(bool (*done)(long value), long value, long budget) {
    if (budget <= 0) return;
    const long deadline = nanoseconds() + budget;
    for (int polls = 1; !done(value); polls++) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
        if (polls % 64 == 0 && nanoseconds() > deadline) return;
    }
}

static bool newJobSince(long seen) { return atomic_load_explicit(&pool.generation, memory_order_acquire) != seen; }
static bool noWorkerRunning(long unused) { return atomic_load_explicit(&pool.running, memory_order_acquire) == 0; }

static void *worker(void *unused) {
    long seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.open || pool.generation == seen) {
            const long budget = pool.pollNanoseconds;
            pthread_mutex_unlock(&pool.lock);
            pollFor(newJobSince, seen, budget);
            pthread_mutex_lock(&pool.lock);
            // Sleep only when no job came while polling; one posted and already closed is skipped.
            if (pool.generation == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            if (pool.generation != seen && !pool.open) seen = pool.generation;
        }
        seen = pool.generation;
        if (pool.joined == pool.helpers) continue;
        pool.joined++;
        pool.running++;
        Job *job = pool.job;
        pthread_mutex_unlock(&pool.lock);
        // A worker whose scratch cannot be had (out of memory) leaves its share to the others.
        if (!job->prepare || job->prepare(job->context)) takeItems(job);
        pthread_mutex_lock(&pool.lock);
        if (--pool.running == 0 && !pool.open) pthread_cond_signal(&pool.finished);
    }
    return unused;
}

// Starts workers up to `wanted`; returns how many there are (fewer if the system refuses threads).
static int startWorkers(int wanted) {
    if (!pool.cores) {
#if defined(__linux__)
        cpu_set_t allowed;
        pool.cores = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
#else
        pool.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
    }
    if (wanted > MAX_WORKERS) wanted = MAX_WORKERS;
    if (pool.workers >= wanted) return pool.workers;
    // Workers block the asynchronous signals, so the stop signals' handlers run on the threads that
    // called us; a fault in a worker still reaches the crash handler there.
    sigset_t blocked, previous;
    sigfillset(&blocked);
    const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    for (int i = 0; i < 4; i++) sigdelset(&blocked, faults[i]);
    pthread_sigmask(SIG_SETMASK, &blocked, &previous);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    for (pthread_t thread; pool.workers < wanted && pthread_create(&thread, &attributes, worker, NULL) == 0;) pool.workers++;
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    return pool.workers;
}

bool suder_parallel(int threads, long count, bool (*prepare)(void *context), void (*body)(void *context, long item),
                    void *context) {
    Job job = {count, prepare, body, context, 0};
    // One thread's share: run here. So is a job while the pool serves another caller (or this one,
    // from inside an item).
    if (threads <= 1 || count <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        if (prepare && !prepare(context)) return false;
        for (long item = 0; item < count; item++) body(context, item);
        return true;
    }
    if (prepare && !prepare(context)) {
        pthread_mutex_unlock(&pool.busy);
        return false;
    }
    pthread_mutex_lock(&pool.lock);
    // The pool may hold more workers than this job's threads (a larger count earlier).
    int helpers = startWorkers(threads - 1);
    if (helpers > threads - 1) helpers = threads - 1;
    pool.helpers = helpers < count - 1 ? helpers : (int)(count - 1);
    // Threads that outnumber the cores would poll on the cores the others need: they sleep at once.
    pool.pollNanoseconds = threads <= pool.cores ? POLL_NANOSECONDS : 0;
    pool.joined = pool.running = 0;
    pool.job = &job;
    pool.generation++;
    pool.open = true;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    takeItems(&job);

    // Close the job to late wakers (a worker the scheduler has not run yet would only find it
    // empty) and wait for those inside it.
    pthread_mutex_lock(&pool.lock);
    pool.open = false;
    if (pool.running > 0) {
        const long budget = pool.pollNanoseconds;
        pthread_mutex_unlock(&pool.lock);
        pollFor(noWorkerRunning, 0, budget);
        pthread_mutex_lock(&pool.lock);
        while (pool.running > 0) pthread_cond_wait(&pool.finished, &pool.lock);
    }
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.busy);
    return true;
}
