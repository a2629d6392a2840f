// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "poolfs",
    products: [
        .library(name: "PoolCore", targets: ["PoolCore"]),
        .library(name: "PoolNet", targets: ["PoolNet"]),
        .executable(name: "poolfs", targets: ["poolfs"]),
        .executable(name: "poolfs-bench", targets: ["PoolBench"]),
        // libpoolcore.so, the C API of include/poolcore.h.
        .library(name: "poolcore", type: .dynamic, targets: ["PoolCoreC"]),
        // Direct access's Swift part, loaded by libpoolfs-direct.so (the C
        // layer a program preloads, built by scripts/deps's
        // poolfs_build_direct) at its first read of a poolfs file.
        .library(name: "poolfs-direct-swift", type: .dynamic, targets: ["PoolDirect"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.2.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
    ],
    targets: [
        // C libraries: a module map and a shim header each, nothing else.
        .systemLibrary(name: "CPmem", pkgConfig: "libpmem",
                       providers: [.apt(["libpmem-dev"])]),
        .systemLibrary(name: "CPmemObj", pkgConfig: "libpmemobj",
                       providers: [.apt(["libpmemobj-dev"])]),
        .systemLibrary(name: "CNuma", pkgConfig: "numa",
                       providers: [.apt(["libnuma-dev"])]),
        // Linux calls that need _GNU_SOURCE (punching holes, SEEK_DATA).
        .systemLibrary(name: "CLinux"),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev", "liburing-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CUCX", pkgConfig: "ucx",
                       providers: [.apt(["libucx-dev", "libibverbs-dev"])]),

        // The format of direct access's area and requests: no dependency,
        // so libpoolfs-direct.so links no more than it needs.
        .target(name: "DirectFormat"),
        .target(
            name: "PoolCore",
            dependencies: [
                "CPmem", "CNuma", "CLinux", "DirectFormat", "PoolThreads",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: internalChecks),
        // Threads that run beside Swift's task pool: periodic work, rings.
        .target(
            name: "PoolThreads",
            dependencies: ["CLinux"]),
        // Direct access: the interposed libc calls and the copy in C, the
        // rest (leases, mappings, reports) in Swift.
        // Built here to check it compiles; its library is made by the C
        // compiler alone (scripts/deps): any library SwiftPM links needs
        // the Swift runtime (its start-up object calls it), and a
        // preloaded one would load it into every process (4 ms a start).
        .target(name: "DirectInterposer"),
        .systemLibrary(name: "CDirect"),
        .target(
            name: "PoolDirect",
            dependencies: ["CDirect", "DirectFormat", .product(name: "Atomics", package: "swift-atomics")]),
        .target(
            name: "PoolCoreC",
            dependencies: ["PoolCore"]),
        // The file system model over PoolCore: no FUSE in it.
        .target(
            name: "PoolFS",
            dependencies: ["PoolCore", "DirectFormat", .product(name: "Atomics", package: "swift-atomics")]),
        // How FUSE requests arrive and replies leave: /dev/fuse through
        // libfuse, and rings per CPU. Knows no file system: it calls the
        // adapter through FUSETransportHandler.
        .target(
            name: "FUSETransport",
            dependencies: ["CFuse", "PoolThreads"]),
        // The libfuse3 low-level adapter: requests in, PoolFS calls, replies out.
        .target(
            name: "PoolFUSE",
            dependencies: ["PoolFS", "DirectFormat", "FUSETransport", "PoolThreads", "CFuse", "CLinux"]),
        // Memory nodes and RemotePool over UCX: a pool other machines use.
        .target(
            name: "PoolNet",
            dependencies: [
                "PoolCore", "PoolThreads", "CUCX",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]),
        .executableTarget(
            name: "poolfs",
            dependencies: [
                "PoolCore", "PoolFS", "PoolFUSE", "PoolNet", "CZstd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // The benchmark links the peers (pmemobj, …) so that `poolfs` does not.
        .executableTarget(
            name: "PoolBench",
            dependencies: [
                "PoolCore", "PoolNet", "CPmemObj",
                .product(name: "Atomics", package: "swift-atomics"),
            ]),
        // Child processes for the multi-process and crash tests.
        .executableTarget(
            name: "PoolTestHelper",
            dependencies: ["PoolCore", "PoolNet"]),
        // Tests by layer, with what they share (pools in scratch
        // directories, child processes, mounted pools) in TestSupport.
        .target(
            name: "TestSupport",
            dependencies: ["PoolCore"],
            path: "Tests/TestSupport"),
        .testTarget(
            name: "PoolCoreTests",
            dependencies: ["PoolCore", "PoolCoreC", "TestSupport", "PoolTestHelper", "poolfs"]),
        .testTarget(
            name: "PoolFSTests",
            dependencies: ["PoolCore", "PoolFS", "TestSupport", "PoolTestHelper", "poolfs"]),
        .testTarget(
            name: "PoolFUSETests",
            dependencies: ["PoolCore", "PoolFS", "TestSupport", "PoolTestHelper", "poolfs"]),
        .testTarget(
            name: "PoolNetTests",
            dependencies: ["PoolCore", "PoolNet", "TestSupport", "PoolTestHelper", "poolfs"]),
        .testTarget(
            name: "CommandLineTests",
            dependencies: ["PoolCore", "TestSupport", "poolfs"]),
    ],
    swiftLanguageModes: [.v6]
)

/// `POOLFS_INTERNAL_CHECKS=1 swift build` turns on the invariant checkers.
var internalChecks: [SwiftSetting] {
    if Context.environment["POOLFS_INTERNAL_CHECKS"] == "1" {
        return [.define("POOLFS_INTERNAL_CHECKS")]
    }
    return []
}
