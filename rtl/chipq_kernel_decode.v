// chipq RTL check: the nine weights of one 3x3 kernel from its mask ROM word and its alpha.
// Mask word layout (SPEC.md section 7): tap t = ky*3 + kx holds its m-bit code at bits t*m .. t*m+m-1.
`default_nettype none

module chipq_kernel_decode (
    input  wire [44:0]     mask_word,  // 9*m bits used (9*5 = 45 at most)
    input  wire [2:0]      m,          // mask bits, 1..5
    input  wire [7:0]      alpha,
    output wire [9*14-1:0] weights     // tap t at [t*14 +: 14], signed
);
    genvar t;
    generate
        for (t = 0; t < 9; t = t + 1) begin : tap
            wire [44:0] shifted = mask_word >> (m * t);
            wire signed [5:0] level;
            chipq_mask_decode decode (
                .code(shifted[4:0]), .m(m), .alpha(alpha), .level(level), .weight(weights[t*14 +: 14])
            );
        end
    endgenerate
endmodule

`default_nettype wire
