import CPmemObj
import Foundation
import PoolCore

/// Heap alloc+free pairs per second (random sizes 16–1024 B, 10,000 live
/// objects per thread) and peak memory after a mixed workload: poolfs
/// against glibc, jemalloc, mimalloc, tcmalloc (each preloaded into a worker
/// process of its own, so that they do not replace one another's malloc) and
/// PMDK's pmemobj. Every peer runs in a worker process; rounds interleave them.
struct HeapBenchmark {
    let seconds: Double
    let rounds = 3
    static let peers = ["poolfs", "glibc", "jemalloc", "mimalloc", "tcmalloc", "pmemobj"]
    static let preload = [
        "jemalloc": "libjemalloc.so.2", "mimalloc": "libmimalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4",
    ]

    func run() throws -> [Workload] {
        var rates: [Int: [String: [Double]]] = [1: [:], 2: [:]]
        var peaks: [String: Double] = [:]
        let peers = HeapBenchmark.peers.filter(HeapBenchmark.available)
        for _ in 0..<rounds {
            for threads in [1, 2] {
                for peer in peers {
                    let value = try worker(["rate", peer, "\(threads)", "\(seconds)"], peer: peer)
                    rates[threads]![peer, default: []].append(value)
                }
            }
        }
        for peer in peers { peaks[peer] = try worker(["peak", peer], peer: peer) }
        return [1, 2].map { threads in
            Workload(name: "alloc+free random 16-1024 B, 10000 live, \(threads)-thread", unit: "ops/s",
                     results: rates[threads]!.mapValues(Measure.median))
        } + [Workload(name: "peak memory after a mixed workload, 1-thread", unit: "MiB", results: peaks)]
    }

    static func available(_ peer: String) -> Bool {
        guard let library = preload[peer] else { return true }
        return FileManager.default.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/" + library)
    }

    /// Runs `poolfs-bench heap-worker …` and reads the number it prints.
    private func worker(_ arguments: [String], peer: String) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0].hasPrefix("/")
            ? CommandLine.arguments[0] : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0])
        process.arguments = ["heap-worker"] + arguments
        var environment = ProcessInfo.processInfo.environment
        if let library = HeapBenchmark.preload[peer] { environment["LD_PRELOAD"] = library }
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, let value = Double(text) else {
            throw PoolError.system(call: "heap-worker \(arguments.joined(separator: " "))", path: text, errno: EIO)
        }
        return value
    }
}

/// One allocator behind the two calls the workload makes.
protocol Allocator: Sendable {
    func allocate(_ size: Int) -> UInt64
    func free(_ object: UInt64)
    /// The object's bytes in this process, so the workload can use them.
    func pointer(_ object: UInt64) -> UnsafeMutableRawPointer?
    /// A handle for one thread (threads sharing one Swift object would
    /// contend on its reference count, which measures nothing of interest).
    func forThread() -> any Allocator
}

extension Allocator {
    func forThread() -> any Allocator { self }
}

struct MallocAllocator: Allocator {
    func allocate(_ size: Int) -> UInt64 { UInt64(UInt(bitPattern: malloc(size))) }
    func free(_ object: UInt64) { Foundation.free(UnsafeMutableRawPointer(bitPattern: UInt(object))) }
    func pointer(_ object: UInt64) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(object)) }
}

struct PoolfsAllocator: Allocator {
    let heap: Heap
    func allocate(_ size: Int) -> UInt64 { try! heap.allocate(size: size).rawValue }
    func free(_ object: UInt64) { try! heap.free(GlobalAddress(rawValue: object)) }
    func forThread() -> any Allocator { PoolfsAllocator(heap: try! heap.pool.openHeap(name: heap.name)) }
    func pointer(_ object: UInt64) -> UnsafeMutableRawPointer? {
        heap.pool.unsafePointer(to: GlobalAddress(rawValue: object))
    }
}

struct PmemobjAllocator: @unchecked Sendable, Allocator {
    let pop: OpaquePointer
    func allocate(_ size: Int) -> UInt64 {
        var oid = PMEMoid()
        guard pmemobj_alloc(pop, &oid, size, 0, nil, nil) == 0 else { fatalError("pmemobj_alloc") }
        return oid.off
    }
    func free(_ object: UInt64) {
        var oid = PMEMoid(pool_uuid_lo: PmemobjAllocator.uuid, off: object)
        pmemobj_free(&oid)
    }
    /// pmemobj_direct is an inline function: the pool handle is the mapping's base.
    func pointer(_ object: UInt64) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(pop) + Int(object) }
    nonisolated(unsafe) static var uuid: UInt64 = 0
}

/// The worker side: `heap-worker rate PEER THREADS SECONDS` prints pairs per
/// second; `heap-worker peak PEER` prints peak resident MiB after the mixed
/// workload.
enum HeapWorker {
    static func main(_ arguments: [String]) throws {
        let scratch = try ScratchHome()
        defer { withExtendedLifetime(scratch) {} }
        let home = scratch.path
        let allocator = try make(arguments[1], home: home)
        switch arguments[0] {
        case "rate":
            let threads = Int(arguments[2])!
            let seconds = Double(arguments[3])!
            print(rate(allocator, threads: threads, seconds: seconds))
        default:
            mixed(allocator)
            print(peakMiB())
        }
    }

    static func make(_ peer: String, home: String) throws -> any Allocator {
        switch peer {
        case "poolfs":
            let pool = try Pool.create(name: "bench", size: 4 << 30, at: home)
            return PoolfsAllocator(heap: try pool.createHeap(name: "bench"))
        case "pmemobj":
            guard let pop = pmemobj_create(home + "/pmemobj.pool", "bench", 2 << 30, 0o600) else {
                throw PoolError.system(call: "pmemobj_create", path: home, errno: errno)
            }
            var probe = PMEMoid()
            _ = pmemobj_alloc(pop, &probe, 16, 0, nil, nil)
            PmemobjAllocator.uuid = probe.pool_uuid_lo
            pmemobj_free(&probe)
            return PmemobjAllocator(pop: pop)
        default:
            return MallocAllocator()
        }
    }

    static func rate(_ allocator: any Allocator, threads: Int, seconds: Double) -> Double {
        Measure.rate(threads: threads, seconds: seconds, setUp: { thread in
            Workset(allocator.forThread(), seed: UInt64(thread) * 0x9e37_79b9 + 1)
        }) { workset in
            workset.replaceOne()
        }
    }

    /// Grow to 200,000 objects, free every other one, add 100,000 larger
    /// ones, free 90%, add 100,000 small: a heap that must give memory back
    /// or reuse it well. Every object is written whole, as a program would.
    static func mixed(_ allocator: any Allocator) {
        var random = Random(seed: 12345)
        func make(_ size: Int) -> UInt64 {
            let object = allocator.allocate(size)
            allocator.pointer(object)?.initializeMemory(as: UInt8.self, repeating: 0x5a, count: size)
            return object
        }
        var objects = (0..<200_000).map { _ in make(16 + Int(random.next() % 1009)) }
        for i in stride(from: 0, to: objects.count, by: 2) { allocator.free(objects[i]); objects[i] = 0 }
        objects += (0..<100_000).map { _ in make(1024 + Int(random.next() % 3072)) }
        for i in objects.indices where objects[i] != 0 && random.next() % 10 != 0 {
            allocator.free(objects[i])
            objects[i] = 0
        }
        objects += (0..<100_000).map { _ in make(16 + Int(random.next() % 1009)) }
    }

    static func peakMiB() -> Double {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM") } ?? ""
        let kib = Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        return (kib / 1024 * 10).rounded() / 10
    }
}

struct Random {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return state
    }
}

/// One thread's 10,000 live objects; each step frees one at random and
/// allocates a new one of random size in its place.
final class Workset {
    let allocator: any Allocator
    let objects: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) var random: Random

    init(_ allocator: any Allocator, seed: UInt64) {
        self.allocator = allocator
        random = Random(seed: seed)
        objects = .allocate(capacity: 10_000)
        var random = random
        for i in 0..<10_000 { objects[i] = allocator.allocate(16 + Int(random.next() % 1009)) }
    }

    deinit { objects.deallocate() }

    @inline(__always)
    func replaceOne() {
        let r = random.next()
        let i = Int(r % 10_000)
        allocator.free(objects[i])
        objects[i] = allocator.allocate(16 + Int((r >> 20) % 1009))
    }
}
