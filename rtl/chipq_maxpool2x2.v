// chipq RTL check: 2x2 max-pool of four uint8 activations (SPEC.md 4.3).
`default_nettype none

module chipq_maxpool2x2 (
    input  wire [7:0] a,  // in[c][2y][2x]
    input  wire [7:0] b,  // in[c][2y][2x+1]
    input  wire [7:0] c,  // in[c][2y+1][2x]
    input  wire [7:0] d,  // in[c][2y+1][2x+1]
    output wire [7:0] y
);
    wire [7:0] top = (a > b) ? a : b;
    wire [7:0] bottom = (c > d) ? c : d;
    assign y = (top > bottom) ? top : bottom;
endmodule

`default_nettype wire
