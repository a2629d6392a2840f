import Atomics
import PoolCore
import PoolNet
import PoolThreads
#if canImport(Glibc)
import Glibc
#endif

/// Clients of a memory node for the PoolNet tests, run in network
/// namespaces. Each prints one line per step.
enum RemoteClients {
    static func connect(_ node: String, _ keyFile: String) -> RemotePool {
        do {
            return try RemotePool.connect(to: node, key: NodeKey.load(from: keyFile))
        } catch {
            fail("\(error)")
        }
    }

    /// `rounds` times: allocate a page, stamp it, add one to the word at
    /// `counter` by CAS and one to the word after it by fetch-and-add.
    /// Prints "run ADDRESS" per page, then "done".
    static func storm(_ pool: RemotePool, counter: GlobalAddress, rounds: Int, index: Int) {
        do {
            for round in 0..<rounds {
                let page = try pool.allocatePages(count: 1)
                let stamp = page.rawValue ^ 0x5a5a_5a5a_5a5a_5a5a
                try withUnsafeBytes(of: stamp) { try pool.write(at: page, from: $0) }
                var seen = try pool.fetchAndAdd(at: counter, 0)
                while true {
                    let result = try pool.compareAndSwap(at: counter, expected: seen, desired: seen + 1)
                    if result.exchanged { break }
                    seen = result.original
                }
                _ = try pool.fetchAndAdd(at: counter.advanced(by: 8), 1)
                say("run \(page) \(index) \(round)")
            }
            say("done")
        } catch {
            fail("\(error)")
        }
    }

    /// Writes page after page of `region` (4 KiB each, every word the
    /// page's number + 1), printing "acked N" once write N returned. On an
    /// error it says so and keeps going: the node may come back.
    static func writer(_ pool: RemotePool, region: GlobalAddress, pages: Int) -> Never {
        var page = 0
        var buffer = [UInt64](repeating: 0, count: 512)
        while page < pages {
            for i in buffer.indices { buffer[i] = UInt64(page + 1) }
            do {
                try buffer.withUnsafeBytes { try pool.write(at: region.advanced(by: UInt64(page) * 4096), from: $0) }
                say("acked \(page)")
                page += 1
            } catch {
                say("failed \(page): \(error)")
            }
        }
        say("done")
        exit(0)
    }

    /// Reads commands from stdin: "put K V", "get K", "alloc", "quit",
    /// for the tests that steer a client step by step.
    static func console(_ pool: RemotePool, table: GlobalAddress?, slots: Int) -> Never {
        let map = table.map { SharedHashTable(memory: pool, base: $0, slots: slots) }
        while let line = readLine() {
            let words = line.split(separator: " ")
            do {
                switch words.first {
                case "put":
                    try map!.put(UInt64(words[1])!, UInt64(words[2])!)
                    say("ok")
                case "get":
                    say(try map!.get(UInt64(words[1])!).map { "value \($0)" } ?? "missing")
                case "alloc":
                    say("run \(try pool.allocatePages(count: 1))")
                case "quit":
                    exit(0)
                default:
                    say("error: unknown command \(line)")
                }
            } catch {
                say("error: \(error)")
            }
        }
        exit(0)
    }

    /// Opens pool NAME at HOME (keeping its remote shelves' caches), takes
    /// `pages` pages of heap `heap` (placed remote), prints "writing
    /// ADDRESS", then writes a counter into the run's first page, then its
    /// last, over and over, half the time sending them to the node at
    /// once: at any instant the first holds at least the last. The run's
    /// second page holds `unsentStamp`, kept in the cache only. On "stop":
    /// "stopped COUNT".
    static let unsentStamp: UInt64 = 0xD1E7_0000_5EAD_BEEF

    static func heapWriter(home: String, name: String, heap: String, pages: Int) -> Never {
        RemoteShelves.install()
        do {
            let pool = try Pool.open(name: name, at: home)
            let run = try pool.openHeap(name: heap).allocatePages(count: pages)
            let last = run.advanced(by: UInt64(pages - 1) * UInt64(pool.pageSize))
            nonisolated(unsafe) var value: UInt64 = 0
            let round = {
                value += 1
                for address in [run, last] {
                    if value & 1 == 0 {
                        try withUnsafeBytes(of: value) { try pool.write(at: address, from: $0) }
                    } else {
                        try pool.withUnsafeMutableBytes(at: address, count: 8) { $0.storeBytes(of: value, as: UInt64.self) }
                    }
                }
            }
            // Only in the cache, never sent: newer than the node's page.
            try pool.withUnsafeMutableBytes(at: run.advanced(by: UInt64(pool.pageSize)), count: 8) {
                $0.storeBytes(of: RemoteClients.unsentStamp, as: UInt64.self)
            }
            try round()
            let stop = UnsafeAtomic<Bool>.create(false)
            let thread = JoinableThread {
                do {
                    while !stop.load(ordering: .relaxed) { try round() }
                } catch {
                    fail("\(error)")
                }
            }
            say("writing \(run)")
            while let line = readLine(), line != "stop" {}
            stop.store(true, ordering: .relaxed)
            thread?.join()
            say("stopped \(value)")
            pool.close()
        } catch {
            fail("\(error)")
        }
        exit(0)
    }
}
