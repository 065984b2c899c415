"""Process-wide counters behind cg.stats()."""

STAT_NAMES = ("kernels_compiled", "cache_hits_memory", "cache_hits_disk", "kernels_launched",
              "bytes_host_to_device", "bytes_device_to_host")

STATS = dict.fromkeys(STAT_NAMES, 0)


def count(name: str, n: int = 1) -> None:
    STATS[name] += n


def reset() -> None:
    for name in STAT_NAMES:
        STATS[name] = 0
