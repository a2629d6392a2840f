import Foundation
import PoolCore
import PoolNet

/// `poolfs bench remote`: a RemotePool client and a memory node (`poolfs
/// serve`, a process of its own) on loopback, UCX over TCP, against Redis
/// (redis-server and redis-benchmark, 4 KiB values) and UCX's own
/// ucx_perftest (tag_lat at 4 KiB, tag_bw at 1 MiB, both sides active) in
/// the same run, interleaved, three rounds, medians.
struct RemoteBenchmark {
    let seconds: Double
    static let rounds = 3
    static let regionPages = 1024  // 64 MiB of 64 KiB pages, read at random

    func run() throws -> [Workload] {
        setenv("UCX_TLS", "tcp", 1)
        let home = try ScratchHome()
        defer { withExtendedLifetime(home) {} }
        let node = try Server(["serve", "bench", "--path", home.path, "--listen", "127.0.0.1:0",
                               "--key-file", home.path + "/key", "-f"], executable: Server.poolfs, setUp: {
            _ = try Pool.create(name: "bench", size: 1 << 30, pageSize: 64 << 10, at: home.path).close()
            try NodeKey.create(at: home.path + "/key")
        })
        defer { node.stop() }
        guard let address = node.firstLine.split(separator: " ").last else {
            throw PoolError.system(call: "poolfs serve", path: node.firstLine, errno: EIO)
        }
        let pool = try RemotePool.connect(to: String(address), key: NodeKey.load(from: home.path + "/key"))
        defer { pool.close() }
        let region = try pool.allocatePages(count: Self.regionPages)
        let page = [UInt8](repeating: 0xa5, count: pool.pageSize)
        for index in 0..<Self.regionPages { try pool.write(at: region.advanced(by: UInt64(index * pool.pageSize)), bytes: page) }

        let redis = try Server(["--port", "0", "--save", "", "--appendonly", "no"], executable: "redis-server",
                               usesPort: true)
        defer { redis.stop() }

        var results: [String: [String: [Double]]] = [:]
        let registered = "1 MiB read into a buffer registered once"
        func record(_ workload: String, _ peer: String, _ value: Double) {
            results[workload, default: [:]][peer, default: []].append(value)
        }
        for _ in 0..<Self.rounds {
            let read1 = "4 KiB read, queue depth 1", read16 = "4 KiB read, queue depth 16"
            let write1 = "4 KiB write, queue depth 1", write16 = "4 KiB write, queue depth 16"
            record(read1, "poolfs", try transfers(pool, region, depth: 1, bytes: 4096, write: false))
            record(read16, "poolfs", try transfers(pool, region, depth: 16, bytes: 4096, write: false))
            record(write1, "poolfs", try transfers(pool, region, depth: 1, bytes: 4096, write: true))
            record(write16, "poolfs", try transfers(pool, region, depth: 16, bytes: 4096, write: true))
            record("1 MiB read", "poolfs", try transfers(pool, region, depth: 1, bytes: 1 << 20, write: false) * 1.048576)
            record("CAS round trip", "poolfs", try casLatency(pool, region))

            let one = try redisRates(redis.port, connections: 1), sixteen = try redisRates(redis.port, connections: 16)
            record(read1, "redis", one.get)
            record(write1, "redis", one.set)
            record(read16, "redis", sixteen.get)
            record(write16, "redis", sixteen.set)

            let oneWay = try perftest("tag_lat", size: 4096, iterations: Int(20_000 * seconds)).latency
            for workload in [read1, write1] { record(workload, "ucx_perftest", 1e6 / (2 * oneWay)) }
            record("CAS round trip", "ucx_perftest", 2 * oneWay)
            record("1 MiB read", "ucx_perftest", try perftest("tag_bw", size: 1 << 20, iterations: Int(2000 * seconds)).bandwidth)

            // Lunasa's point: the caller's buffer registered once, against per transfer.
            pool.registrationMode = .perTransfer
            record(registered, "registered per transfer", try transfers(pool, region, depth: 1, bytes: 1 << 20, write: false) * 1.048576)
            pool.registrationMode = .cached
            record(registered, "poolfs", try transfers(pool, region, depth: 1, bytes: 1 << 20, write: false) * 1.048576)
        }
        let units = ["1 MiB read": "MB/s", "CAS round trip": "µs", registered: "MB/s"]
        let order = ["4 KiB read, queue depth 1", "4 KiB read, queue depth 16", "4 KiB write, queue depth 1",
                     "4 KiB write, queue depth 16", "1 MiB read", "CAS round trip", registered]
        let calls = order.map { name in
            Workload(name: name, unit: units[name] ?? "ops/s", results: results[name]!.mapValues(Measure.median))
        }
        let mount = try RemoteMountBenchmark(seconds: seconds, node: String(address), keyFile: home.path + "/key",
                                             home: home.path).run()
        let tagBandwidth = Measure.median(results["1 MiB read"]!["ucx_perftest"]!)
        return calls + [
            Workload(name: "mount: 1 MiB sequential write, then close", unit: "MB/s", results: mount.write),
            Workload(name: "mount: 1 MiB sequential read, cached", unit: "MB/s", results: mount.cached),
            Workload(name: "mount: 1 MiB sequential read, cold", unit: "MB/s",
                     results: ["poolfs": mount.cold, "ucx_perftest": tagBandwidth]),
            Workload(name: "mount: 4 KiB random read, \(Int((mount.hitRate * 100).rounded()))% cache hits", unit: "ops/s",
                     results: mount.random),
        ]
    }

    /// Reads or writes of `bytes` at random pages of the region, `depth` in
    /// flight at once, for `seconds`; transfers per second (MB/s: × size).
    private func transfers(_ pool: RemotePool, _ region: GlobalAddress, depth: Int, bytes: Int, write: Bool) throws -> Double {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: depth * bytes, alignment: 4096)
        defer { buffer.deallocate() }
        var generator = SystemRandomNumberGenerator()
        let pagesPerTransfer = max(bytes / pool.pageSize, 1)
        func batch() -> [(GlobalAddress, UnsafeMutableRawBufferPointer)] {
            (0..<depth).map { slot in
                let page = Int.random(in: 0...(Self.regionPages - pagesPerTransfer), using: &generator)
                return (region.advanced(by: UInt64(page * pool.pageSize)),
                        UnsafeMutableRawBufferPointer(rebasing: buffer[slot * bytes..<(slot + 1) * bytes]))
            }
        }
        let start = Measure.now()
        var done = 0
        while Measure.now() - start < seconds {
            let transfers = batch()
            if write {
                try pool.write(transfers.map { ($0.0, UnsafeRawBufferPointer($0.1)) })
            } else {
                try pool.read(transfers)
            }
            done += depth
        }
        let rate = Double(done) / (Measure.now() - start)
        return bytes >= 1 << 20 ? rate * Double(bytes) / 1e6 / 1.048576 : rate
    }

    /// Microseconds per compare-and-swap, one after another.
    private func casLatency(_ pool: RemotePool, _ region: GlobalAddress) throws -> Double {
        var value: UInt64 = 0
        let start = Measure.now()
        var done = 0
        while Measure.now() - start < seconds {
            value = try pool.compareAndSwap(at: region, expected: value, desired: value &+ 1).original &+ 1
            done += 1
        }
        return (Measure.now() - start) / Double(done) * 1e6
    }

    /// GET and SET per second of 4 KiB values over `connections` connections.
    private func redisRates(_ port: Int, connections: Int) throws -> (get: Double, set: Double) {
        let requests = Int(Double(connections == 1 ? 20_000 : 80_000) * seconds)
        let output = try Server.output("redis-benchmark", ["-h", "127.0.0.1", "-p", "\(port)", "-t", "get,set", "-d", "4096",
                                                           "-c", "\(connections)", "-n", "\(requests)", "--csv"])
        var rates: [String: Double] = [:]
        for line in output.split(separator: "\n") {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            if fields.count > 1, let rate = Double(fields[1]) { rates[fields[0]] = rate }
        }
        guard let get = rates["GET"], let set = rates["SET"] else {
            throw PoolError.system(call: "redis-benchmark", path: output, errno: EIO)
        }
        return (get, set)
    }

    /// One ucx_perftest run, both sides active: its one-way latency (µs)
    /// and bandwidth (MB/s) from the "Final:" line.
    private func perftest(_ test: String, size: Int, iterations: Int) throws -> (latency: Double, bandwidth: Double) {
        let port = 13_000 + Int(getpid() % 20_000)
        let server = try Server(["-p", "\(port)"], executable: "ucx_perftest", waitsForOutput: false)
        defer { server.stop() }
        // The server listens a moment after it starts: the client retries.
        for _ in 0..<50 {
            let output = try Server.output("ucx_perftest", ["127.0.0.1", "-p", "\(port)", "-t", test, "-s", "\(size)",
                                                            "-n", "\(max(iterations, 100))"])
            if let final = output.split(separator: "\n").last(where: { $0.hasPrefix("Final:") }) {
                let fields = final.split(separator: " ").compactMap { Double($0) }
                guard fields.count >= 8 else { break }
                return (fields[2], fields[5])
            }
            usleep(100_000)
        }
        throw PoolError.system(call: "ucx_perftest -t \(test)", path: "no result", errno: EIO)
    }
}

/// A server process for the length of the benchmark, stopped with SIGTERM.
final class Server {
    static var poolfs: String { URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/poolfs" }
    let process = Process()
    private(set) var firstLine = ""
    private(set) var port = 0

    /// `usesPort`: told to pick a free port, found by trying them (redis
    /// takes no port 0). Otherwise waits for its first output line unless
    /// `waitsForOutput` is false.
    init(_ arguments: [String], executable: String, usesPort: Bool = false, waitsForOutput: Bool = true,
         setUp: () throws -> Void = {}) throws {
        try setUp()
        var arguments = arguments
        if usesPort, let index = arguments.firstIndex(of: "0") {
            port = 20_000 + Int(getpid() % 20_000)
            arguments[index] = "\(port)"
        }
        process.executableURL = URL(fileURLWithPath: executable.hasPrefix("/") ? executable : "/usr/bin/" + executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard waitsForOutput else { return }
        var bytes = Data()
        let handle = output.fileHandleForReading
        while !bytes.contains(10) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            bytes += chunk
        }
        firstLine = String(decoding: bytes.prefix { $0 != 10 }, as: UTF8.self)
        // Keep draining, so a chatty server never blocks on a full pipe.
        handle.readabilityHandler = { _ = $0.availableData }
    }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    /// Runs a client to completion and returns what it printed.
    static func output(_ executable: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/" + executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
