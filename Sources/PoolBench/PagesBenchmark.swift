import CPmemObj
import Foundation
import PoolCore

/// Page alloc+free pairs per second: poolfs against glibc malloc/free and
/// PMDK's pmemobj_alloc/pmemobj_free on a pool in /dev/shm, interleaved.
struct PagesBenchmark {
    let seconds: Double
    let rounds = 3
    let pageSize = 64 << 10

    func run() throws -> [Workload] {
        let scratch = try ScratchHome()
        defer { withExtendedLifetime(scratch) {} }
        let home = scratch.path
        let pool = try Pool.create(name: "bench", size: 2 << 30, pageSize: UInt64(pageSize), at: home)
        defer { pool.close() }
        let pmemPath = home + "/pmemobj.pool"
        guard let pop = pmemobj_create(pmemPath, "bench", 2 << 30, 0o600) else {
            throw PoolError.system(call: "pmemobj_create", path: pmemPath, errno: errno)
        }
        defer { pmemobj_close(pop) }
        nonisolated(unsafe) let objects = pop

        var workloads: [Workload] = []
        for pages in [1, 16] {
            for threads in [1, 2] {
                let bytes = pages * pageSize
                var samples: [String: [Double]] = [:]
                for _ in 0..<rounds {
                    samples["poolfs", default: []].append(Measure.rate(threads: threads, seconds: seconds) { _ in
                        let address = try! pool.allocatePages(count: pages)
                        try! pool.freePages(at: address, count: pages)
                    })
                    samples["glibc", default: []].append(Measure.rate(threads: threads, seconds: seconds) { thread in
                        let pointer = malloc(bytes)
                        Sink.keep(pointer, thread)
                        free(pointer)
                    })
                    samples["pmemobj", default: []].append(Measure.rate(threads: threads, seconds: seconds) { _ in
                        var oid = PMEMoid()
                        guard pmemobj_alloc(objects, &oid, bytes, 0, nil, nil) == 0 else { fatalError("pmemobj_alloc") }
                        pmemobj_free(&oid)
                    })
                }
                workloads.append(Workload(
                    name: "alloc+free \(pages)-page run, \(threads)-thread", unit: "ops/s",
                    results: samples.mapValues(Measure.median)))
            }
        }
        return workloads
    }
}

/// Where the peers' pointers go so that the optimizer cannot drop a
/// malloc/free pair: a store of the pointer makes it escape.
enum Sink {
    nonisolated(unsafe) static let slots = UnsafeMutablePointer<UInt>.allocate(capacity: 64 * 16)

    @inline(__always)
    static func keep(_ pointer: UnsafeMutableRawPointer?, _ thread: Int) {
        slots[(thread & 63) * 16] = UInt(bitPattern: pointer)
    }
}
