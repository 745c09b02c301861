// chipq RTL check: a small streaming engine for one conv3x3 + ReLU layer (SPEC.md 4.2).
//
// Weights come from the ROM images `chipq export --format hex` writes (SPEC.md section 7): an alpha
// ROM and a mask ROM addressed by kernel o*I + i, a bias ROM addressed by o. A pruned chip format v2
// layer (cfg_pruned) also has a presence ROM (1 bit, address o*I + i), and its alpha and mask ROMs
// hold only the present kernels: address j = rank of (o, i) among them, o-major. Alpha words are
// cfg_alpha_bits-wide codes; the engine multiplies by code << (8 - cfg_alpha_bits). The input map sits in
// an activation SRAM, element (i, y, x) at address (i*H + y)*W + x (the C order of the test vectors),
// 16-bit words of which the low 9 bits are used (signed: x0 = p - mean for conv1, 0..255 after).
//
// Schedule: LANES output channels at a time share one stream of input pixels.
//   for each group of LANES output channels:
//     pruned layer, LANES > 1: count the presence bits of the group's first LANES - 1 rows,
//       SCAN_W bits a cycle ((LANES-1)*ceil(I/SCAN_W) + 1 cycles), for each lane's first alpha/mask
//       address (lane 0 continues where the previous group's last lane ended). A row o is the
//       contiguous bits o*I .. o*I + I - 1 of the presence bank, so a chip reads it through a
//       SCAN_W-bit-wide port of the same bit stream (SPEC.md section 7).
//     for each input channel i:
//       load the group's LANES kernels (o, i) from the ROMs (LANES + 1 cycles); in a pruned layer
//       each lane reads its presence bit, its alpha/mask address advances only on a present kernel,
//       and an absent kernel loads alpha 0
//       if no lane has a present kernel (o, i), plane i is skipped (pruned layers; unless it is the
//       last plane and none has streamed yet: the accumulators still need their bias)
//       else stream plane i in raster order through two line buffers; every cycle one 3x3 window
//       reaches all lanes and each lane adds its 9 products to its accumulator of that pixel
//       ((H+1)*(W+1) positions: one extra row and column flush the last windows; 2 drain cycles)
//     requantise each lane's H*W accumulators into the output SRAM, element (o, y, x) at
//     address (o*H + y)*W + x
// Zero padding is applied by masking window taps whose row or column lies outside the map.
// Accumulators are signed 32-bit; the first streamed input channel starts from bias << bias_shift.
`default_nettype none

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
    parameter ALPHA_HEX = "",     // $readmemh images; empty: the ROM is not initialised
    parameter BIAS_HEX  = "",
    parameter MASK_HEX  = "",
    parameter PRES_HEX  = "",
    parameter IN_HEX    = ""      // optional initial input map (else written through the host port)
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
    output reg         busy,
    output reg         done,
    // host port: write the input SRAM, read the output SRAM
    input  wire        in_we,
    input  wire [23:0] in_waddr,
    input  wire [15:0] in_wdata,
    input  wire [23:0] out_raddr,
    output wire [7:0]  out_rdata
);
    // ---------------------------------------------------------------- memories
    reg [7:0]  alpha_rom [0:K_DEPTH-1];
    reg [44:0] mask_rom  [0:K_DEPTH-1];
    reg [11:0] bias_rom  [0:B_DEPTH-1];
    reg        pres_rom  [0:P_DEPTH-1];
    reg [15:0] in_ram    [0:IN_DEPTH-1];
    reg [7:0]  out_ram   [0:OUT_DEPTH-1];

    initial begin
        if (ALPHA_HEX != "") $readmemh(ALPHA_HEX, alpha_rom);
        if (BIAS_HEX != "")  $readmemh(BIAS_HEX, bias_rom);
        if (MASK_HEX != "")  $readmemh(MASK_HEX, mask_rom);
        if (PRES_HEX != "")  $readmemh(PRES_HEX, pres_rom);
        if (IN_HEX != "")    $readmemh(IN_HEX, in_ram);
    end

`ifndef SYNTHESIS
    // Simulation only (yosys defines SYNTHESIS): the same images named at run time by plusargs
    // (+ALPHA_HEX=path ...), so that one build of the engine (sized for the largest layer) runs every
    // layer of a network; a file per parameter would mean one Verilator build per layer.
    reg [8*1024-1:0] image_path;
    initial begin
        if ($value$plusargs("ALPHA_HEX=%s", image_path)) $readmemh(image_path, alpha_rom);
        if ($value$plusargs("BIAS_HEX=%s", image_path))  $readmemh(image_path, bias_rom);
        if ($value$plusargs("MASK_HEX=%s", image_path))  $readmemh(image_path, mask_rom);
        if ($value$plusargs("PRES_HEX=%s", image_path))  $readmemh(image_path, pres_rom);
        if ($value$plusargs("IN_HEX=%s", image_path))    $readmemh(image_path, in_ram);
    end
`endif

    assign out_rdata = out_ram[out_raddr];

    // ---------------------------------------------------------------- control
    localparam S_IDLE = 3'd0, S_LOAD = 3'd1, S_STREAM = 3'd2, S_DRAIN = 3'd3, S_REQ = 3'd4, S_SCAN = 3'd5;
    reg [2:0]  state;
    reg [12:0] group;          // first output channel of the group
    reg [12:0] chan;           // input channel i
    reg [23:0] group_k;        // group * I
    reg [23:0] kaddr;          // kernel address of the lane being loaded
    reg [12:0] load_count;     // 0..LANES
    reg [7:0]  sy, sx;         // stream position, 0..H, 0..W
    reg [23:0] plane_base;     // i * H * W
    reg [23:0] row_base;       // plane_base + sy * W
    reg [1:0]  drain;
    reg [12:0] req_lane;
    reg [15:0] req_pix;
    reg [23:0] out_waddr;
    // pruned layers: each lane's next alpha/mask address, and the presence scan
    reg [23:0] lane_ptr [0:LANES-1];
    reg        any_present;    // some live lane of this plane has a present kernel
    reg        streamed;       // a plane of this group has streamed (its accumulators hold the bias)
    reg        scan_issuing;
    reg [12:0] scan_lane, scan_i, sd_lane;
    reg [23:0] scan_addr, scan_count;
    reg        sd_valid, sd_last_in_row;

    wire [15:0] hw = cfg_h * cfg_w;

    // ROM read port (synchronous: the word of the address of cycle n is there in cycle n+1),
    // shared by the lanes while loading; a lane past the last output channel reads address 0
    wire        load_lane_live = (load_count < LANES) && (group + load_count < cfg_out_ch);
    wire [23:0] load_ptr = lane_ptr[load_count < LANES ? load_count : 13'd0];
    // a pruned lane's alpha/mask address is its pointer; past the last present kernel it reads 0
    // (the kernel is then absent and the word unused)
    wire [23:0] rom_kaddr = !load_lane_live ? 24'd0 :
                            !cfg_pruned ? kaddr : (load_ptr < K_DEPTH ? load_ptr : 24'd0);
    wire [12:0] rom_baddr = load_lane_live ? group + load_count : 13'd0;
    // the presence ROM: the scan's address while scanning, else the kernel being loaded
    wire        scan_row_live = (group + scan_lane < cfg_out_ch);
    wire [23:0] pres_addr = load_lane_live && cfg_pruned ? kaddr : 24'd0;
    reg  [7:0]  alpha_q;
    reg  [44:0] mask_q;
    reg  [11:0] bias_q;
    reg         pres_q, live_q;
    always @(posedge clk) begin
        alpha_q <= alpha_rom[rom_kaddr];
        mask_q  <= mask_rom[rom_kaddr];
        bias_q  <= bias_rom[rom_baddr];
        pres_q  <= pres_rom[pres_addr < P_DEPTH ? pres_addr : 24'd0];
        live_q  <= load_lane_live;
    end
    wire        present_q = live_q && (!cfg_pruned || pres_q);  // the kernel captured this cycle
    // SCAN_W presence bits of row group + scan_lane from column scan_i, counted (bits past the row's
    // end are not part of it)
    reg  [7:0]  scan_chunk, scan_pop_q;
    integer w;
    always @(posedge clk) begin
        scan_chunk = 8'd0;
        for (w = 0; w < SCAN_W; w = w + 1)
            if (scan_i + w < cfg_in_ch && scan_addr + w < P_DEPTH)
                scan_chunk = scan_chunk + {7'd0, pres_rom[scan_addr + w]};
        scan_pop_q <= (state == S_SCAN && scan_issuing && scan_row_live) ? scan_chunk : 8'd0;
    end
    wire        scan_row_end = (scan_i + SCAN_W >= cfg_in_ch);
    wire [7:0]  alpha_value = alpha_q << (4'd8 - cfg_alpha_bits);  // code << (8 - a) (SPEC 3.4)

    // per-lane kernel registers
    reg [7:0]  lane_alpha [0:LANES-1];
    reg [44:0] lane_mask  [0:LANES-1];
    reg [11:0] lane_bias  [0:LANES-1];

    // ---------------------------------------------------------------- stream pipeline
    // stage A: position (sy, sx) -> SRAM read; stage B: line buffers; stage C: window -> MACs
    reg        a_valid;
    reg        a_inside;
    reg [23:0] a_addr;
    always @* begin
        a_valid  = (state == S_STREAM);
        a_inside = (sy < cfg_h) && (sx < cfg_w);
        a_addr   = row_base + sx;
    end

    reg        b_valid, b_inside;
    reg [7:0]  b_sy, b_sx;
    reg [15:0] b_pix;
    always @(posedge clk) begin
        b_valid  <= a_valid;
        b_inside <= a_inside;
        b_sy     <= sy;
        b_sx     <= sx;
        b_pix    <= in_ram[a_inside ? a_addr : 24'd0];
        if (in_we) in_ram[in_waddr] <= in_wdata;
    end

    // the line buffer: one word per column, {row sy-2, row sy-1}; one read and one write port
    reg  [17:0] lines [0:MAX_W];
    wire [8:0]  p = b_inside ? b_pix[8:0] : 9'd0;
    wire [17:0] above = lines[b_sx];
    wire [8:0]  r1 = above[8:0];
    wire [8:0]  r2 = above[17:9];
    reg  [26:0] col0, col1, col2;  // {row sy, row sy-1, row sy-2} at columns sx, sx-1, sx-2
    reg         c_valid;
    reg  [7:0]  c_sy, c_sx;
    always @(posedge clk) begin
        if (b_valid) begin
            lines[b_sx] <= {r1, p};
            col2 <= col1;
            col1 <= col0;
            col0 <= {p, r1, r2};
        end
        c_valid <= b_valid;
        c_sy    <= b_sy;
        c_sx    <= b_sx;
    end

    // stage C: the window around centre (c_sy - 1, c_sx - 1); taps outside the map are zero
    wire        centre = c_valid && (c_sy != 8'd0) && (c_sx != 8'd0);
    wire [15:0] centre_addr = (c_sy - 8'd1) * cfg_w + (c_sx - 8'd1);
    reg  [9*9-1:0] window;
    integer ky, kx;
    reg  row_ok, col_ok;
    reg  [26:0] column;
    always @* begin
        for (ky = 0; ky < 3; ky = ky + 1) begin
            for (kx = 0; kx < 3; kx = kx + 1) begin
                // tap (ky, kx) reads row c_sy - 2 + ky, column c_sx - 2 + kx
                row_ok = (c_sy + ky >= 2) && (c_sy + ky - 2 < cfg_h);
                col_ok = (c_sx + kx >= 2) && (c_sx + kx - 2 < cfg_w);
                column = (kx == 0) ? col2 : ((kx == 1) ? col1 : col0);
                window[(ky*3 + kx)*9 +: 9] = (row_ok && col_ok) ? column[ky*9 +: 9] : 9'd0;
            end
        end
    end

    // ---------------------------------------------------------------- lanes
    wire [31:0] req_acc [0:LANES-1];
    genvar lane;
    generate
        for (lane = 0; lane < LANES; lane = lane + 1) begin : lanes
            reg signed [31:0] acc [0:MAX_HW-1];
            wire [9*14-1:0] weights;
            wire signed [31:0] acc_next;
            chipq_kernel_decode decode (
                .mask_word(lane_mask[lane]), .m(cfg_m), .alpha(lane_alpha[lane]), .weights(weights)
            );
            chipq_mac3x3 mac (
                .weights(weights), .x(window), .first(!streamed), .bias(lane_bias[lane]),
                .bias_shift(cfg_bias_shift), .acc_in(acc[centre_addr]), .acc_out(acc_next)
            );
            always @(posedge clk)
                if (centre && (group + lane < cfg_out_ch)) acc[centre_addr] <= acc_next;
            assign req_acc[lane] = acc[req_pix];
        end
    endgenerate

    wire [7:0] req_y;
    chipq_requant requant (.acc(req_acc[req_lane]), .out_shift(cfg_out_shift), .y(req_y));

    // ---------------------------------------------------------------- sequencer
    wire last_plane = (chan + 13'd1 >= cfg_in_ch);
    wire plane_has_work = any_present || present_q;  // at load_count == LANES: the last lane's bit is present_q
    wire needs_scan = cfg_pruned && (LANES > 1);
    integer n;

    // A new group of output channels starting at `first` (kernel address first * I): lane 0's
    // alpha/mask address continues from `rank`; the scan finds the other lanes' (pruned layers).
    task start_group(input [12:0] first, input [23:0] first_k, input [23:0] rank);
        begin
            group        <= first;
            group_k      <= first_k;
            kaddr        <= first_k;
            chan         <= 13'd0;
            plane_base   <= 24'd0;
            load_count   <= 13'd0;
            any_present  <= 1'b0;
            streamed     <= 1'b0;
            lane_ptr[0]  <= rank;
            scan_addr    <= first_k;
            scan_count   <= rank;
            scan_lane    <= 13'd0;
            scan_i       <= 13'd0;
            scan_issuing <= 1'b1;
            sd_valid     <= 1'b0;
            state        <= needs_scan ? S_SCAN : S_LOAD;
        end
    endtask

    // Plane `chan` is done (streamed or skipped): load the next one, or requantise the group.
    task next_plane;
        begin
            load_count  <= 13'd0;
            any_present <= 1'b0;
            if (!last_plane) begin
                chan       <= chan + 13'd1;
                plane_base <= plane_base + hw;
                kaddr      <= group_k + chan + 13'd1;
                state      <= S_LOAD;
            end else begin
                req_lane  <= 13'd0;
                req_pix   <= 16'd0;
                out_waddr <= group * hw;
                state     <= S_REQ;
            end
        end
    endtask

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            busy  <= 1'b0;
            done  <= 1'b0;
        end else begin
            case (state)
                S_IDLE: if (start) begin
                    busy <= 1'b1;
                    done <= 1'b0;
                    start_group(13'd0, 24'd0, 24'd0);
                end
                S_SCAN: begin
                    // cycle n counts SCAN_W presence bits from scan_addr, cycle n+1 adds them; the end
                    // of row group + l gives lane l + 1 its first alpha/mask address
                    if (scan_issuing) begin
                        if (scan_row_end) begin
                            scan_addr <= scan_addr + (cfg_in_ch - scan_i);  // the next row's first bit
                            scan_i    <= 13'd0;
                            scan_lane <= scan_lane + 13'd1;
                            if (scan_lane + 13'd2 == LANES) scan_issuing <= 1'b0;
                        end else begin
                            scan_addr <= scan_addr + SCAN_W;
                            scan_i    <= scan_i + SCAN_W;
                        end
                    end
                    if (sd_valid) begin
                        scan_count <= scan_count + {16'd0, scan_pop_q};
                        if (sd_last_in_row) lane_ptr[sd_lane + 13'd1] <= scan_count + {16'd0, scan_pop_q};
                    end
                    sd_valid       <= scan_issuing;
                    sd_last_in_row <= scan_row_end;
                    sd_lane        <= scan_lane;
                    if (!scan_issuing) state <= S_LOAD;  // the last bit is counted this cycle
                end
                S_LOAD: begin
                    // cycle n issues lane n's read, cycle n+1 captures it
                    if (load_count < LANES) kaddr <= kaddr + cfg_in_ch;
                    if (load_count != 13'd0) begin
                        n = load_count - 1;
                        // an absent kernel weighs 0 (its ROM words belong to another kernel, or to none)
                        lane_alpha[n] <= present_q ? alpha_value : 8'd0;
                        lane_mask[n]  <= present_q ? mask_q : 45'd0;
                        lane_bias[n]  <= bias_q;
                        if (present_q) begin
                            any_present <= 1'b1;
                            if (cfg_pruned) lane_ptr[n] <= lane_ptr[n] + 24'd1;
                        end
                    end
                    load_count <= load_count + 13'd1;
                    if (load_count == LANES) begin
                        if (cfg_pruned && !plane_has_work && !(last_plane && !streamed)) begin
                            next_plane;  // every kernel (o, i) of the group is pruned: skip plane i
                        end else begin
                            sy <= 8'd0;
                            sx <= 8'd0;
                            row_base <= plane_base;
                            state <= S_STREAM;
                        end
                    end
                end
                S_STREAM: begin
                    if (sx == cfg_w) begin
                        sx <= 8'd0;
                        sy <= sy + 8'd1;
                        row_base <= row_base + cfg_w;
                        if (sy == cfg_h) begin
                            drain <= 2'd0;
                            state <= S_DRAIN;
                        end
                    end else begin
                        sx <= sx + 8'd1;
                    end
                end
                S_DRAIN: begin  // two cycles: the last positions pass stages B and C
                    drain <= drain + 2'd1;
                    if (drain == 2'd1) begin
                        streamed <= 1'b1;
                        next_plane;
                    end
                end
                S_REQ: begin
                    out_ram[out_waddr] <= req_y;
                    out_waddr <= out_waddr + 24'd1;
                    if (req_pix + 16'd1 == hw) begin
                        req_pix <= 16'd0;
                        if (req_lane + 13'd1 == LANES || group + req_lane + 13'd1 >= cfg_out_ch) begin
                            if (group + LANES >= cfg_out_ch) begin
                                busy  <= 1'b0;
                                done  <= 1'b1;
                                state <= S_IDLE;
                            end else begin
                                // the last lane's pointer ended at the next group's first kernel
                                start_group(group + LANES, group_k + LANES * cfg_in_ch, lane_ptr[LANES-1]);
                            end
                        end else begin
                            req_lane <= req_lane + 13'd1;
                        end
                    end else begin
                        req_pix <= req_pix + 16'd1;
                    end
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule

`default_nettype wire
