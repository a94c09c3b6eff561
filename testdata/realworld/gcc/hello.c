#include <stdio.h>
int main(void){puts("hello from gcc");return 0;}
