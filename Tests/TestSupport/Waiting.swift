#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` until it holds or `seconds` pass; whether it held.
/// For what a test cannot be told of (memory given back, a heartbeat's
/// verdict), never to wait for a step it could be told of.
public func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let deadline = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 + seconds
    while true {
        if condition() { return true }
        clock_gettime(CLOCK_MONOTONIC, &now)
        if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 >= deadline { return condition() }
        usleep(20_000)
    }
}
