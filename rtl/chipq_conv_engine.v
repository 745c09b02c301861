// chipq RTL check: one conv3x3 + ReLU layer (SPEC.md 4.2) on chipq_conv_core (rtl/chipq_conv_core.v,
// whose header describes the schedule) with its own memories: the per-layer RTL check.
//
// Weights come from the ROM images `chipq export --format hex` writes (SPEC.md section 7): an alpha
// ROM and a mask ROM addressed by kernel o*I + i, a bias ROM addressed by o. A pruned chip format v2
// layer (cfg_pruned) also has a presence ROM (1 bit, address o*I + i), and its alpha and mask ROMs
// hold only the present kernels: address j = rank of (o, i) among them, o-major. The input map sits in
// an activation SRAM, element (i, y, x) at address (i*H + y)*W + x (the C order of the test vectors),
// 16-bit words of which the low 9 bits are used (signed: x0 = p - mean for conv1, 0..255 after); the
// output SRAM holds element (o, y, x) at (o*H + y)*W + x.
`default_nettype none

// One layer with its own memories: the weight ROMs from `chipq export --format hex` images, the input
// SRAM from a `--vectors-hex` input (or the host port), the output SRAM read by the host.
module chipq_conv_engine #(
    parameter LANES     = 8,      // output channels computed in parallel
    parameter MAX_W     = 32,     // widest map (line buffer length is MAX_W + 1)
    parameter MAX_HW    = 1024,   // largest H*W (accumulator depth per lane)
    parameter IN_DEPTH  = 4096,   // input SRAM words (>= I*H*W)
    parameter OUT_DEPTH = 8192,   // output SRAM words (>= O*H*W)
    parameter K_DEPTH   = 4096,   // alpha / mask ROM words (= O*I, or the present kernels P)
    parameter B_DEPTH   = 512,    // bias ROM words (= O)
    parameter P_DEPTH   = 1,      // presence ROM words (= O*I for a pruned layer)
    parameter SCAN_W    = 32,     // presence bits the scan counts per cycle
    parameter ALPHA_HEX    = "",  // $readmemh images (chipq_weight_roms); empty: not initialised
    parameter BIAS_HEX     = "",
    parameter MASK_HEX     = "",
    parameter PRESENCE_HEX = "",
    parameter IN_HEX       = ""   // optional initial input map (else written through the host port)
) (
    input  wire        clk,
    input  wire        rst,
    // layer registers (hold while busy)
    input  wire [12:0] cfg_in_ch,       // I, 1..4096
    input  wire [12:0] cfg_out_ch,      // O, 1..4096
    input  wire [7:0]  cfg_h,           // H, 1..255
    input  wire [7:0]  cfg_w,           // W, 1..MAX_W
    input  wire [2:0]  cfg_m,           // mask bits, 1..5
    input  wire [3:0]  cfg_alpha_bits,  // stored alpha code width, 1..8 (8 in v1)
    input  wire        cfg_pruned,      // the layer has a kernel presence bitmap (v2)
    input  wire [4:0]  cfg_bias_shift,
    input  wire [4:0]  cfg_out_shift,
    input  wire        start,
    output wire        busy,
    output wire        done,
    // host port: write the input SRAM, read the output SRAM
    input  wire        in_we,
    input  wire [23:0] in_waddr,
    input  wire [15:0] in_wdata,
    input  wire [23:0] out_raddr,
    output wire [7:0]  out_rdata
);
    reg [15:0] in_ram    [0:IN_DEPTH-1];
    reg [7:0]  out_ram   [0:OUT_DEPTH-1];

    initial begin
        if (IN_HEX != "") $readmemh(IN_HEX, in_ram);
    end

`ifndef SYNTHESIS
    // Simulation only: the input map named at run time (+IN_HEX=path), as the weight images are
    // (chipq_weight_roms).
    reg [8*1024-1:0] image_path;
    initial begin
        if ($value$plusargs("IN_HEX=%s", image_path)) $readmemh(image_path, in_ram);
    end
`endif

    assign out_rdata = out_ram[out_raddr];

    wire [23:0] rom_kaddr, pres_addr, scan_addr, in_raddr, out_waddr;
    wire [12:0] rom_baddr;
    wire        out_we;
    wire [7:0]  out_wdata;
    wire [7:0]  alpha_q;
    wire [44:0] mask_q;
    wire [11:0] bias_q;
    wire        pres_q;
    reg  [15:0] in_q;
    wire [SCAN_W-1:0] scan_bits;
    // the layer's weights start at word 0 of each ROM
    chipq_weight_roms #(
        .K_DEPTH(K_DEPTH), .B_DEPTH(B_DEPTH), .P_DEPTH(P_DEPTH), .SCAN_W(SCAN_W),
        .ALPHA_HEX(ALPHA_HEX), .MASK_HEX(MASK_HEX), .BIAS_HEX(BIAS_HEX), .PRESENCE_HEX(PRESENCE_HEX)
    ) roms (
        .clk(clk), .k_addr({8'd0, rom_kaddr}), .b_addr({19'd0, rom_baddr}), .p_addr({8'd0, pres_addr}),
        .s_addr({8'd0, scan_addr}), .alpha_q(alpha_q), .mask_q(mask_q), .bias_q(bias_q), .pres_q(pres_q),
        .scan_bits(scan_bits)
    );
    always @(posedge clk) begin
        in_q <= in_ram[in_raddr];
        if (in_we) in_ram[in_waddr] <= in_wdata;
        if (out_we) out_ram[out_waddr] <= out_wdata;
    end

    chipq_conv_core #(.LANES(LANES), .MAX_W(MAX_W), .MAX_HW(MAX_HW), .SCAN_W(SCAN_W)) core (
        .clk(clk), .rst(rst),
        .cfg_in_ch(cfg_in_ch), .cfg_out_ch(cfg_out_ch), .cfg_h(cfg_h), .cfg_w(cfg_w), .cfg_m(cfg_m),
        .cfg_alpha_bits(cfg_alpha_bits), .cfg_pruned(cfg_pruned), .cfg_bias_shift(cfg_bias_shift),
        .cfg_out_shift(cfg_out_shift), .cfg_pool(1'b0), .start(start), .busy(busy), .done(done),
        .rom_kaddr(rom_kaddr), .rom_baddr(rom_baddr), .pres_addr(pres_addr), .scan_addr_o(scan_addr),
        .alpha_q(alpha_q), .mask_q(mask_q), .bias_q(bias_q), .pres_q(pres_q), .scan_bits(scan_bits),
        .in_raddr(in_raddr), .in_rdata(in_q[8:0]), .out_we(out_we), .out_waddr_o(out_waddr), .out_wdata(out_wdata)
    );
endmodule

`default_nettype wire
