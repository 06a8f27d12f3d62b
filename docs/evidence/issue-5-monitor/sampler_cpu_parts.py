"""Issue 5: what the sampler process costs, part by part (a bare 10 Hz loop, + host source, + NVML
source with the fake 2-GPU module): CPU % of one core from /proc/<pid>/stat over 12 s each.
    python docs/evidence/issue-5-monitor/sampler_cpu_parts.py"""
import time, os, multiprocessing, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "selftest"))
def bare(conn, mode):
    __import__("numpy")  # loaded as in the real sampler: its import is part of the cost
    from gpucert.monitor.sources import HostSource, NvmlSource
    h = HostSource(); h.open(); n = NvmlSource("fake_pynvml"); n.open()
    t0 = time.monotonic(); i = 0; row = {}
    while True:
        d = t0 + i * 0.1 - time.monotonic()
        if d > 0 and conn.poll(d): return
        slow = i % 10 == 0  # counters and host figures once a second, as the sampler reads them
        if mode >= 1 and slow: h.read_counters(row)
        if mode >= 2: n.read(row)
        if mode >= 2 and slow: n.read_counters(row)
        i += 1
def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().split(')')[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
if __name__ == '__main__':
    ctx = multiprocessing.get_context('spawn')
    for mode in (0, 1, 2):
        a, b = ctx.Pipe(); p = ctx.Process(target=bare, args=(b, mode)); p.start()
        time.sleep(2); c0 = cpu(p.pid); time.sleep(12); c1 = cpu(p.pid); a.send(1); p.join()
        print(['bare loop', '+host', '+host+nvml(fake, 2 GPUs)'][mode], '%.2f %% of a core' % (100 * (c1 - c0) / 12))
