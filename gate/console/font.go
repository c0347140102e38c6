package console

import "strings"

// glyphs is a 5x7 block font for the few words the banner spells. Staff
// read the verdict from two metres away; colour alone fails the
// colour-blind and a sunlit screen, so the word itself is large.
var glyphs = map[rune][7]string{
	'A': {" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"},
	'D': {"#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "},
	'M': {"#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"},
	'I': {"#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "#####"},
	'T': {"#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "},
	'E': {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"},
	'N': {"#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"},
	'Y': {"#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "},
	'R': {"#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"},
	'S': {" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "},
	'C': {" ####", "#    ", "#    ", "#    ", "#    ", "#    ", " ####"},
	'O': {" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "},
	'P': {"#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "},
	'F': {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "},
	'L': {"#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"},
	' ': {"     ", "     ", "     ", "     ", "     ", "     ", "     "},
}

const glyphRows = 7

// bigWidth is how many columns big(word, scale) takes.
func bigWidth(word string, scale int) int {
	n := len([]rune(word))
	if n == 0 {
		return 0
	}
	return (n*6 - 1) * scale
}

// big renders word in the block font, each column repeated scale times
// (terminal cells are about twice as tall as wide, so scale 2 looks square).
func big(word string, scale int) []string {
	rows := make([]string, glyphRows)
	for r := range glyphRows {
		var b strings.Builder
		for i, c := range word {
			if i > 0 {
				b.WriteString(strings.Repeat(" ", scale))
			}
			g, ok := glyphs[c]
			if !ok {
				g = glyphs[' ']
			}
			for _, px := range g[r] {
				cell := " "
				if px == '#' {
					cell = "█"
				}
				b.WriteString(strings.Repeat(cell, scale))
			}
		}
		rows[r] = b.String()
	}
	return rows
}
