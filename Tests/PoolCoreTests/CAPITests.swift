import Testing
import TestSupport
@testable import PoolCore

/// The C example, compiled against include/poolcore.h and libpoolcore.so,
/// uses the same heaps as Swift.
@Suite struct CAPITests {
    @Test func theCExampleRunsAgainstTheSameHeaps() throws {
        let scratch = Scratch()
        let pool = try Pool.create(name: "cpool", size: 64 << 20, pageSize: 4096, at: scratch.path)
        pool.close()
        let library = builtExecutable("libpoolcore.so")
        let directory = String(library[..<library.lastIndex(of: "/")!])
        let program = scratch.path + "/example"
        let compiled = try run("cc", ["-std=c11", "-Wall", "-Wextra", "-Werror", "-I", repositoryRoot + "/include",
                                      repositoryRoot + "/Tests/CExample/example.c", "-L", directory, "-lpoolcore",
                                      "-Wl,-rpath," + directory, "-o", program])
        #expect(compiled.status == 0, "\(compiled.output)")
        let result = try run(program, [], environment: [
            "POOLFS_POOL": "cpool", "POOLFS_PATH": scratch.path, "POOLFS_HEAP": "from-c",
        ])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.hasSuffix("ok"), "\(result.output)")
        let kept = try #require(result.output.split(separator: "\n").first { $0.hasPrefix("kept ") })
        let address = GlobalAddress(rawValue: try #require(UInt64(kept.dropFirst(5))))

        let reopened = try Pool.open(name: "cpool", at: scratch.path)
        #expect(Set(reopened.heaps()) == ["from-c", "c-objects"])
        let heap = try reopened.openHeap(name: "from-c")
        #expect(heap.stats().objects == 1)
        #expect(try reopened.read(at: address, count: 14) == Array("written from C".utf8))
        try heap.free(address)
        #expect(heap.stats().objects == 0)
    }
}
